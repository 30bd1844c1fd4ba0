"""CUDA backends: ONNX Runtime's CUDA execution provider (I/O binding) and PyTorch on CUDA (CUDA events).

Both refuse with a one-line :class:`DeviceError` where no usable GPU is present. ``onnxruntime-gpu`` (the
``gpu`` extra) replaces the CPU ``onnxruntime`` package; a session that silently fell back to the CPU
provider is refused rather than timed (:func:`kdnas_deploy.runtime.session.open_session`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.latency.backends.base import Backend, DeployedBackend
from kdnas_deploy.runtime.deploy import DeployConfig
from kdnas_deploy.runtime.devices import CUDA_PROVIDER, providers_for, require_gpu, require_torch_cuda
from kdnas_deploy.runtime.inputs import model_inputs
from kdnas_deploy.runtime.runners import Runner, ort_runner, torch_runner
from kdnas_deploy.runtime.session import SessionSettings, open_session


def _gpu_fingerprint() -> dict[str, Any]:
    from kdnas_deploy.latency.fingerprint import gpu_fingerprint

    return gpu_fingerprint()


class CudaOrtBackend(DeployedBackend):
    """ONNX Runtime with CUDAExecutionProvider through the deployed path (O2 for GPU, fp32 or fp16)."""

    name = "cuda-ort"
    device = "cuda"
    precisions = ("fp32", "fp16")
    provider = CUDA_PROVIDER
    deploy_configs = {"fp32": DeployConfig.cuda_fp32(), "fp16": DeployConfig.cuda_fp16()}

    def __init__(self, precision: str = "fp32", threads: int | None = None, device_id: int = 0) -> None:
        super().__init__(precision, threads)
        self.device_id = device_id

    def check_available(self) -> None:
        providers_for(self.device)
        require_gpu("the cuda-ort backend")

    def path_config(self) -> dict[str, Any]:
        return {"runtime": "onnxruntime", "io_binding": True, "deploy_config": self.deploy_config.to_dict()}

    def machine_fingerprint(self) -> dict[str, Any]:
        return _gpu_fingerprint()

    def open(self, artifact: Path, batch: int, seq: int) -> Runner:
        sess = open_session(artifact, self.device, SessionSettings(self.threads, log_severity=3), self.device_id)
        return ort_runner(sess, model_inputs(batch, seq), self.device, self.device_id)


class CudaTorchBackend(Backend):
    """PyTorch eager on CUDA (students served by PyTorch), fp32 or fp16, timed with CUDA events."""

    name = "cuda-torch"
    device = "cuda"
    precisions = ("fp32", "fp16")
    provider = "torch-cuda"

    def check_available(self) -> None:
        require_torch_cuda("the cuda-torch backend")

    def path_config(self) -> dict[str, Any]:
        return {"runtime": "torch", "attn_implementation": "eager", "dtype": self.precision}

    def machine_fingerprint(self) -> dict[str, Any]:
        return _gpu_fingerprint()

    def prepare(self, arch: Architecture, workdir: Path, seed: int = 0) -> Path:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "arch.json"
        path.write_text(json.dumps({"arch": arch.to_dict(), "seed": seed}))
        return path

    def open(self, artifact: Path, batch: int, seq: int) -> Runner:
        from kdnas_deploy.student import build_student

        spec = json.loads(Path(artifact).read_text())
        model = build_student(Architecture.from_dict(spec["arch"]), seed=spec["seed"]).to("cuda")
        if self.precision == "fp16":
            model = model.half()
        return torch_runner(model, model_inputs(batch, seq), self.device, cuda_events=True)
