"""The runtime layer under ``latency`` and ``export``: what a latency table measures is what ``export`` ships.

Modules (heavy libraries are imported inside functions):

* ``deploy``   :class:`DeployConfig` and :func:`deploy` (PyTorch -> ONNX -> ORT fusions -> optional int8)
* ``devices``  execution providers per device and the device checks
* ``session``  :class:`SessionSettings` (one value -> fingerprint dict and ``ort.SessionOptions``), sessions
* ``inputs``   the model inputs every timed model gets
* ``runners``  :class:`Runner` (ONNX Runtime, I/O binding on CUDA, PyTorch) and its builders
* ``timing``   :class:`Timing`, :class:`TimingPolicy`, wall-clock and CUDA-event timers
* ``lowmem``   the low-memory helpers of the deployed path

This layer imports nothing from ``latency``, ``export``, ``distill``, ``search``, ``pipeline`` or ``cli``.
"""
