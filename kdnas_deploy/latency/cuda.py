"""CUDA backends: ONNX Runtime's CUDA execution provider (I/O binding) and PyTorch on CUDA (CUDA events).

Both refuse with a one-line :class:`DeviceError` where no usable GPU is present. ``onnxruntime-gpu`` (the
``gpu`` extra) replaces the CPU ``onnxruntime`` package; a session that silently fell back to the CPU
provider is refused rather than timed.
"""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import DeviceError
from kdnas_deploy.latency.backends import TimingPolicy, check_precision, default_threads, export_deployed, make_inputs
from kdnas_deploy.timing import Timing, time_callable

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def select_providers(device: str, available: list[str] | tuple[str, ...]) -> list[str]:
    """Execution providers for ``device`` in priority order, or DeviceError naming what is missing.

    CUDA keeps the CPU provider behind it (ORT places the few ops CUDA lacks there, as in serving).
    """
    if device == "cpu":
        if CPU_PROVIDER not in available:
            raise DeviceError("onnxruntime here has no CPUExecutionProvider")
        return [CPU_PROVIDER]
    if device == "cuda":
        if CUDA_PROVIDER not in available:
            raise DeviceError(
                "--device cuda needs onnxruntime-gpu with CUDAExecutionProvider; this onnxruntime offers only "
                + ", ".join(available)
                + " (pip install 'kdnas-deploy[gpu]' on a GPU machine)"
            )
        return [CUDA_PROVIDER, CPU_PROVIDER]
    raise DeviceError(f"unknown device {device!r} (choose from cpu, cuda)")


def _nvidia_smi() -> dict[str, str]:
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
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except Exception:  # pragma: no cover - torch is a dependency
        pass
    return bool(_nvidia_smi())


def require_gpu(what: str) -> None:
    if not gpu_present():
        raise DeviceError(f"--device cuda: no CUDA GPU is visible on this machine ({what} needs one)")


def gpu_fingerprint() -> dict[str, Any]:
    """GPU name, driver, CUDA and cuDNN versions (each None where it cannot be read)."""
    from kdnas_deploy.latency.fingerprint import cpu_fingerprint

    fp = cpu_fingerprint()
    fp.update({"gpu_name": None, "gpu_driver": None, "cuda_version": None, "cudnn_version": None})
    fp.update(_nvidia_smi())
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


# ---------------------------------------------------------------------------------------------- ORT / CUDA
@dataclass
class IoBindingRunner:
    """ORT CUDA session with inputs and outputs bound on the device: copies are not timed."""

    session: Any
    binding: Any
    keep: list[Any]

    def _run(self) -> None:
        self.session.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()

    def time(self, policy: TimingPolicy) -> Timing:
        return time_callable(self._run, max(policy.warmup, 10), policy.reps, policy.min_seconds, policy.max_reps)

    def close(self) -> None:
        self.session = self.binding = None
        self.keep = []
        gc.collect()


class CudaOrtBackend:
    """ONNX Runtime with CUDAExecutionProvider through the deployed path (O2 for GPU, fp32 or fp16)."""

    name = "cuda-ort"
    device = "cuda"
    precisions = ("fp32", "fp16")
    provider = CUDA_PROVIDER

    def __init__(self, precision: str = "fp32", threads: int | None = None, device_id: int = 0) -> None:
        from kdnas_deploy.export.deploy_path import DeployConfig

        check_precision(self, precision)
        self.precision = precision
        self.threads = int(threads) if threads else default_threads()
        self.device_id = device_id
        self.deploy_config = DeployConfig.cuda_fp16() if precision == "fp16" else DeployConfig.cuda_fp32()

    def check_available(self) -> None:
        import onnxruntime as ort

        select_providers("cuda", ort.get_available_providers())
        require_gpu("the cuda-ort backend")

    def providers(self) -> list[Any]:
        import onnxruntime as ort

        names = select_providers("cuda", ort.get_available_providers())
        return [(n, {"device_id": self.device_id}) if n == CUDA_PROVIDER else n for n in names]

    def path_config(self) -> dict[str, Any]:
        return {"runtime": "onnxruntime", "io_binding": True, "deploy_config": self.deploy_config.to_dict()}

    def fingerprint(self) -> dict[str, Any]:
        fp = gpu_fingerprint()
        fp.update(
            backend=self.name,
            execution_provider=self.provider,
            precision=self.precision,
            optimization_level=self.deploy_config.optimize,
            threads=self.threads,
            **self.path_config(),
        )
        return fp

    def prepare(self, arch: Architecture, workdir: Path, seed: int = 0) -> Path:
        return export_deployed(arch, workdir, self.deploy_config, seed)

    def open(self, artifact: Path, batch: int, seq: int) -> IoBindingRunner:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(artifact), so, providers=self.providers())
        if sess.get_providers()[0] != CUDA_PROVIDER:
            raise DeviceError(f"onnxruntime fell back to {sess.get_providers()[0]}; CUDA provider failed to load")
        binding = sess.io_binding()
        names = {i.name for i in sess.get_inputs()}
        keep = []
        for name, arr in make_inputs(batch, seq).items():
            if name in names:
                value = ort.OrtValue.ortvalue_from_numpy(arr, "cuda", self.device_id)
                binding.bind_ortvalue_input(name, value)
                keep.append(value)
        for out in sess.get_outputs():
            binding.bind_output(out.name, "cuda", self.device_id)
        return IoBindingRunner(sess, binding, keep)


# ---------------------------------------------------------------------------------------------- torch / CUDA
@dataclass
class TorchCudaRunner:
    model: Any
    feed: dict[str, Any]

    def time(self, policy: TimingPolicy) -> Timing:
        import time

        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        samples: list[float] = []
        with torch.inference_mode():
            for _ in range(max(policy.warmup, 10)):
                self.model(**self.feed)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            while len(samples) < policy.reps or (
                time.perf_counter() - t0 < policy.min_seconds and len(samples) < policy.max_reps
            ):
                start.record()
                self.model(**self.feed)
                end.record()
                end.synchronize()
                samples.append(float(start.elapsed_time(end)))
        return Timing.from_samples(samples)

    def close(self) -> None:
        import torch

        self.model = None
        self.feed = {}
        gc.collect()
        torch.cuda.empty_cache()


class CudaTorchBackend:
    """PyTorch eager on CUDA (students served by PyTorch), fp32 or fp16, timed with CUDA events."""

    name = "cuda-torch"
    device = "cuda"
    precisions = ("fp32", "fp16")
    provider = "torch-cuda"

    def __init__(self, precision: str = "fp32", threads: int | None = None) -> None:
        check_precision(self, precision)
        self.precision = precision
        self.threads = int(threads) if threads else default_threads()

    def check_available(self) -> None:
        import torch

        if not torch.cuda.is_available():
            raise DeviceError("--device cuda: torch.cuda.is_available() is False here (no GPU or CPU-only torch)")

    def path_config(self) -> dict[str, Any]:
        return {"runtime": "torch", "attn_implementation": "eager", "dtype": self.precision}

    def fingerprint(self) -> dict[str, Any]:
        fp = gpu_fingerprint()
        fp.update(backend=self.name, execution_provider=self.provider, precision=self.precision,
                  optimization_level="none", threads=self.threads, **self.path_config())  # fmt: skip
        return fp

    def prepare(self, arch: Architecture, workdir: Path, seed: int = 0) -> Path:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "arch.json"
        path.write_text(json.dumps({"arch": arch.to_dict(), "seed": seed}))
        return path

    def open(self, artifact: Path, batch: int, seq: int) -> TorchCudaRunner:
        import torch

        from kdnas_deploy.student import build_student

        spec = json.loads(Path(artifact).read_text())
        model = build_student(Architecture.from_dict(spec["arch"]), seed=spec["seed"]).to("cuda")
        if self.precision == "fp16":
            model = model.half()
        feed = {k: torch.from_numpy(v).to("cuda") for k, v in make_inputs(batch, seq).items()}
        return TorchCudaRunner(model, feed)
