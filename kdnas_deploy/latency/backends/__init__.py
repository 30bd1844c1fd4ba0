"""Latency backends: the registry. The contract is :class:`base.Backend`; one module per backend:

* ``cpu-ort``    ONNX Runtime, CPUExecutionProvider, through the deployed path (fp32 / int8), :mod:`.cpu`
* ``cuda-ort``   ONNX Runtime, CUDAExecutionProvider with I/O binding (fp32 / fp16), :mod:`.cuda`
* ``cuda-torch`` PyTorch on CUDA, timed with CUDA events (fp32 / fp16), :mod:`.cuda`
* ``cpu-openvino`` OpenVINO's CPU plugin on the deployed graph's IR (fp32 / bf16; the ``openvino`` extra),
  :mod:`.openvino`

Heavy libraries are imported inside methods.
"""

from __future__ import annotations

from kdnas_deploy.errors import DeviceError
from kdnas_deploy.latency.backends.base import Backend, DeployedBackend, default_threads, deploy_student
from kdnas_deploy.latency.backends.cpu import CpuOrtBackend
from kdnas_deploy.latency.backends.cuda import CudaOrtBackend, CudaTorchBackend
from kdnas_deploy.latency.backends.openvino import CpuOpenVinoBackend

__all__ = [
    "BACKENDS", "BACKEND_DEVICE", "DEFAULT_DEVICE_BACKEND", "Backend", "CpuOpenVinoBackend", "CpuOrtBackend",
    "CudaOrtBackend", "CudaTorchBackend", "DeployedBackend", "backends_for", "default_threads", "deploy_student",
    "get_backend", "register_backend", "resolve_backend_name",
]  # fmt: skip

BACKENDS: dict[str, type[Backend]] = {}
BACKEND_DEVICE: dict[str, str] = {}
DEFAULT_DEVICE_BACKEND = {"cpu": "cpu-ort", "cuda": "cuda-ort"}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Add a backend class to the registry under its ``name``."""
    BACKENDS[cls.name] = cls
    BACKEND_DEVICE[cls.name] = cls.device
    return cls


for _cls in (CpuOrtBackend, CudaOrtBackend, CudaTorchBackend, CpuOpenVinoBackend):
    register_backend(_cls)


def resolve_backend_name(device: str, backend: str | None = None) -> str:
    """The backend name for ``device`` (its default when ``backend`` is None); DeviceError for an unknown
    one or one of another device."""
    if device not in DEFAULT_DEVICE_BACKEND:
        raise DeviceError(f"unknown device {device!r} (choose from {', '.join(DEFAULT_DEVICE_BACKEND)})")
    name = backend or DEFAULT_DEVICE_BACKEND[device]
    if name not in BACKENDS:
        raise DeviceError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if BACKEND_DEVICE[name] != device:
        raise DeviceError(f"backend {name!r} runs on {BACKEND_DEVICE[name]}, not on {device!r}")
    return name


def backends_for(precision: str) -> list[str]:
    """The backends that price ``precision`` (for the one-line refusals)."""
    return [n for n, cls in BACKENDS.items() if precision in cls.precisions]


def get_backend(
    device: str, precision: str = "fp32", threads: int | None = None, backend: str | None = None
) -> Backend:
    """The backend for ``device`` (``cpu``/``cuda``), checked to be usable here (DeviceError otherwise)."""
    name = resolve_backend_name(device, backend)
    instance = BACKENDS[name](precision=precision, threads=threads)
    instance.check_available()
    return instance
