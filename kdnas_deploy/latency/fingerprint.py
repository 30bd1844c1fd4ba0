"""Device fingerprints: what a latency table was measured on, and whether this machine is the same.

The keys in :data:`MACHINE_KEYS` describe the machine and software stack; :func:`compare` lists every key
whose value here differs from the table's. Keys absent from either side are skipped (a CPU table has no
``gpu_name``); :func:`gpu_fingerprint` adds the GPU stack to the CPU's.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any

from kdnas_deploy.runtime.devices import available_providers

ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "sve",
)  # fmt: skip
MACHINE_KEYS = (
    "cpu_model",
    "cpu_id",
    "physical_cores",
    "logical_cores",
    "isa_flags",
    "onnxruntime_version",
    "torch_version",
    "openvino_version",
    "gpu_name",
    "gpu_driver",
    "cuda_version",
    "cudnn_version",
)


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, tuple[str, ...], str | None]:
    """Model string, ISA flags and ``cpu_id`` (vendor, family, model: the model string alone does not tell CPU
    generations apart, e.g. "AMD EPYC" for family 25 and family 26) of the first CPU in /proc/cpuinfo."""
    model, flags = platform.processor() or platform.machine(), ()
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return model, flags, None
    ids: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and model in ("", platform.machine()):
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = tuple(value.split())
        elif key in ("vendor_id", "cpu family", "model") and key not in ids:
            ids[key] = value.strip()
    parts = [ids.get("vendor_id"), *(f"{k} {ids[v]}" for k, v in (("family", "cpu family"), ("model", "model"))
                                      if v in ids)]  # fmt: skip
    cpu_id = " ".join(p for p in parts if p) or None  # e.g. "AuthenticAMD family 26 model 2"
    return model, flags, cpu_id


def cpu_fingerprint() -> dict[str, Any]:
    """CPU model, cores, ISA flags and library versions of this machine."""
    import onnxruntime as ort

    model, flags, cpu_id = _cpuinfo()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # pragma: no cover
        physical = None
    return {
        "cpu_model": model,
        **({"cpu_id": cpu_id} if cpu_id else {}),
        "physical_cores": int(physical or os.cpu_count() or 1),
        "logical_cores": int(os.cpu_count() or 1),
        "isa_flags": [f for f in ISA_FLAGS if f in set(flags)],
        "machine": platform.machine(),
        "os": platform.system(),
        "python_version": platform.python_version(),
        "onnxruntime_version": ort.__version__,
        "onnxruntime_providers": available_providers(),
    }


def compare(table_fp: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """One message per machine key that differs between the table's fingerprint and this machine's."""
    issues = []
    for key in MACHINE_KEYS:
        if key not in table_fp or key not in here:
            continue
        if table_fp[key] != here[key]:
            issues.append(f"{key}: table has {table_fp[key]!r}, this machine has {here[key]!r}")
    threads = table_fp.get("threads")
    cores = here.get("logical_cores")
    if isinstance(threads, int) and isinstance(cores, int) and threads > cores:
        issues.append(f"threads: table used {threads} threads, this machine has {cores} logical cores")
    provider = table_fp.get("execution_provider")
    providers = here.get("onnxruntime_providers")
    ort_path = table_fp.get("runtime", "onnxruntime") == "onnxruntime"  # OpenVINO/torch are no ORT provider
    if ort_path and provider and isinstance(providers, list) and provider not in providers:
        issues.append(f"execution_provider: {provider} is not available in this onnxruntime")
    return issues


def gpu_fingerprint() -> dict[str, Any]:
    """The CPU fingerprint plus GPU name, driver, CUDA and cuDNN versions (each None where it cannot be read)."""
    from kdnas_deploy.runtime.devices import nvidia_smi

    fp = cpu_fingerprint()
    fp.update({"gpu_name": None, "gpu_driver": None, "cuda_version": None, "cudnn_version": None})
    fp.update(nvidia_smi())
    try:
        import torch

        fp["torch_version"] = torch.__version__
        if torch.cuda.is_available():
            fp["gpu_name"] = fp["gpu_name"] or torch.cuda.get_device_name(0)
            fp["cuda_version"] = torch.version.cuda
            cudnn = torch.backends.cudnn.version()
            fp["cudnn_version"] = str(cudnn) if cudnn else None
    except Exception:  # pragma: no cover
        pass
    try:  # onnxruntime-gpu records the CUDA/cuDNN it was built against
        from onnxruntime.capi import build_and_package_info as info

        fp["onnxruntime_cuda_version"] = getattr(info, "cuda_version", None)
        fp["onnxruntime_cudnn_version"] = getattr(info, "cudnn_version", None)
        fp["cuda_version"] = fp["cuda_version"] or fp["onnxruntime_cuda_version"]
        fp["cudnn_version"] = fp["cudnn_version"] or fp["onnxruntime_cudnn_version"]
    except Exception:
        pass
    return fp


def machine_fingerprint(device: str, backend: str | None = None) -> dict[str, Any]:
    """This machine's fingerprint as a table of ``device`` (and ``backend``) records it: a ``cpu-openvino``
    table also records the OpenVINO version (None where it is not installed, so that is a difference too)."""
    fp = gpu_fingerprint() if device == "cuda" else cpu_fingerprint()
    if backend == "cpu-openvino":
        from kdnas_deploy.runtime.openvino import openvino_version

        fp["openvino_version"] = openvino_version()
    return fp
