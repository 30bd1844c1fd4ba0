"""``cpu-ort``: ONNX Runtime on the CPU, through the deployed path (export -> O2 fusions -> optional int8)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdnas_deploy.latency.backends.base import DeployedBackend
from kdnas_deploy.runtime.deploy import DeployConfig
from kdnas_deploy.runtime.devices import CPU_PROVIDER, providers_for
from kdnas_deploy.runtime.inputs import model_inputs
from kdnas_deploy.runtime.runners import Runner, ort_runner
from kdnas_deploy.runtime.session import SessionSettings, open_session


class CpuOrtBackend(DeployedBackend):
    name = "cpu-ort"
    device = "cpu"
    precisions = ("fp32", "int8")
    provider = CPU_PROVIDER
    deploy_configs = {"fp32": DeployConfig.cpu_fp32(), "int8": DeployConfig.cpu_int8()}

    @property
    def settings(self) -> SessionSettings:
        return SessionSettings(threads=self.threads, log_severity=3)

    def check_available(self) -> None:
        providers_for(self.device)

    def path_config(self) -> dict[str, Any]:
        return {"runtime": "onnxruntime", "deploy_config": self.deploy_config.to_dict()}

    def machine_fingerprint(self) -> dict[str, Any]:
        from kdnas_deploy.latency.fingerprint import cpu_fingerprint

        return cpu_fingerprint()

    def extra_fingerprint(self) -> dict[str, Any]:
        return {"session_options": self.settings.to_dict()}

    def open(self, artifact: Path, batch: int, seq: int) -> Runner:
        return self.open_shapes(artifact)(batch, seq)

    def open_shapes(self, artifact: Path) -> Callable[[int, int], Runner]:
        """One session for every shape (an ORT session takes any batch and length of its dynamic axes)."""
        session = open_session(artifact, self.device, self.settings)
        return lambda batch, seq: ort_runner(session, model_inputs(batch, seq))
