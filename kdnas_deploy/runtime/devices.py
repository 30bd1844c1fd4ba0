"""Execution providers and device checks, for the latency backends and for ``export``/``bench`` alike.

``--device cuda`` needs ``onnxruntime-gpu`` (the ``gpu`` extra) exposing ``CUDAExecutionProvider``; without it
:func:`providers_for` raises :class:`~kdnas_deploy.errors.DeviceError` (exit code 2) before any work starts.
CUDA keeps the CPU provider behind it (ORT places the few ops CUDA lacks there, as in serving).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from kdnas_deploy.errors import DeviceError

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
# device -> ONNX Runtime providers, in priority order (CPU kept as the fallback for unsupported nodes)
PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": (CPU_PROVIDER,),
    "cuda": (CUDA_PROVIDER, CPU_PROVIDER),
}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def providers_for(device: str, available: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The provider list for ``device``; raises ``DeviceError`` when its first provider is missing."""
    if device not in PROVIDERS:
        raise DeviceError(f"unknown device {device!r} (choose from {', '.join(PROVIDERS)})")
    wanted = PROVIDERS[device]
    have = available_providers() if available is None else list(available)
    if wanted[0] not in have:
        raise DeviceError(
            f"--device {device} needs ONNX Runtime's {wanted[0]} (install the 'gpu' extra, onnxruntime-gpu, "
            f"on a machine with a CUDA GPU); this onnxruntime offers only {', '.join(have) or 'nothing'}"
        )
    return list(wanted)


def provider_options(device: str, device_id: int = 0) -> list[Any]:
    """:func:`providers_for` in the form ``InferenceSession(providers=...)`` takes, CUDA on ``device_id``."""
    return [(n, {"device_id": device_id}) if n == CUDA_PROVIDER else n for n in providers_for(device)]


def torch_cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch is a dependency
        return False


def require_torch_cuda(what: str = "--device cuda") -> None:
    if not torch_cuda_available():
        raise DeviceError(f"{what} needs a CUDA build of PyTorch with a visible GPU (torch.cuda.is_available())")


def require_device(device: str, need_torch: bool = False) -> None:
    """Fail early (``DeviceError``) when ``device`` cannot run here; ``need_torch`` also checks PyTorch CUDA."""
    providers_for(device)
    if device == "cuda" and need_torch:
        require_torch_cuda()


def nvidia_smi() -> dict[str, str]:
    """GPU name, driver and memory of the first GPU as ``nvidia-smi`` reports them ({} without one)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip().splitlines()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    if not out:
        return {}
    name, driver, memory = ([p.strip() for p in out[0].split(",")] + ["", "", ""])[:3]
    return {"gpu_name": name, "gpu_driver": driver, "gpu_memory": memory}


def gpu_present() -> bool:
    """True when a CUDA GPU is visible (through torch or nvidia-smi)."""
    return torch_cuda_available() or bool(nvidia_smi())


def require_gpu(what: str) -> None:
    if not gpu_present():
        raise DeviceError(f"--device cuda: no CUDA GPU is visible on this machine ({what} needs one)")


def default_threads() -> int:
    """The one thread default of every command and backend: this machine's physical cores (ORT's own
    default), at least 1."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # pragma: no cover - psutil is a dependency
        n = None
    return int(n or os.cpu_count() or 1)
