"""Runners: one loaded model bound to fixed inputs, ready to be timed.

:class:`Runner` is what the latency backends open and what ``bench`` and ``export`` time. It is built by
:func:`ort_runner` (an ONNX Runtime session; on CUDA with I/O binding, inputs and outputs kept on the
device so that host-device copies are not what gets timed) or :func:`torch_runner` (PyTorch eager; on CUDA
timed with CUDA events when asked).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kdnas_deploy.runtime.inputs import feed_for
from kdnas_deploy.runtime.timing import Timing, TimingPolicy, time_callable, time_cuda_events

CUDA_MIN_WARMUP = 10  # GPU kernels are selected and cached during the first calls


@dataclass
class Runner:
    """``fn()`` runs one forward pass on fixed inputs (synchronized: when it returns, the work is done).

    ``event_fn`` (PyTorch on CUDA) is the bare forward call timed with CUDA events instead of the wall
    clock; ``keep`` holds what ``fn`` needs alive (session, binding, device inputs); ``min_warmup`` raises
    the policy's warm-up; ``on_close`` frees device memory.
    """

    fn: Callable[[], object]
    keep: list[Any] = field(default_factory=list)
    min_warmup: int = 0
    event_fn: Callable[[], object] | None = None
    on_close: Callable[[], None] | None = None

    def time(self, policy: TimingPolicy) -> Timing:
        warmup = max(policy.warmup, self.min_warmup)
        if self.event_fn is not None:
            return time_cuda_events(self.event_fn, warmup, policy.reps, policy.min_seconds, policy.max_reps)
        return time_callable(self.fn, warmup, policy.reps, policy.min_seconds, policy.max_reps)

    def close(self) -> None:
        self.fn = lambda: None
        self.event_fn = None
        self.keep = []
        gc.collect()
        if self.on_close is not None:
            self.on_close()


def ort_runner(session: Any, inputs: dict[str, Any], device: str = "cpu", device_id: int = 0,
               where: Any = "the ONNX graph") -> Runner:  # fmt: skip
    """A runner of ``session`` on the entries of ``inputs`` it takes (ModelError for an input it wants that
    ``inputs`` lacks). On CUDA the inputs are bound once on the device and outputs to device memory."""
    feed = feed_for([i.name for i in session.get_inputs()], inputs, where)
    if device != "cuda":
        return Runner(lambda: session.run(None, feed), keep=[session])
    import onnxruntime as ort

    binding = session.io_binding()
    values = []
    for name, arr in feed.items():
        value = ort.OrtValue.ortvalue_from_numpy(arr, "cuda", device_id)
        binding.bind_ortvalue_input(name, value)
        values.append(value)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda", device_id)

    def run() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return Runner(run, keep=[session, binding, values], min_warmup=CUDA_MIN_WARMUP)


def torch_runner(model: Any, inputs: dict[str, Any], device: str = "cpu", cuda_events: bool = False) -> Runner:
    """A runner of a PyTorch model on ``inputs`` (numpy arrays, moved to ``device``). ``cuda_events``:
    :meth:`Runner.time` times the forward pass with CUDA events (the latency tables' ``cuda-torch``)."""
    import torch

    dev = torch.device("cuda" if device == "cuda" else "cpu")
    feed = {k: torch.as_tensor(v, device=dev) for k, v in inputs.items()}

    def forward() -> None:
        model(**feed)

    def run() -> None:
        with torch.inference_mode():
            forward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    if dev.type != "cuda":
        return Runner(run, keep=[model])
    return Runner(run, keep=[model], min_warmup=CUDA_MIN_WARMUP, event_fn=forward if cuda_events else None,
                  on_close=torch.cuda.empty_cache)
