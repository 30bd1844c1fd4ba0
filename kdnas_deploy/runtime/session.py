"""ONNX Runtime sessions: one value for the session settings, rendered to the dict recorded in table
fingerprints and to ``ort.SessionOptions``, and one way to open a session on a device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import DeviceError, ModelError
from kdnas_deploy.runtime.devices import CUDA_PROVIDER, provider_options


@dataclass(frozen=True)
class SessionSettings:
    """How a session runs: ``threads`` intra-op threads (ORT's default when None) and one inter-op thread,
    sequential execution, ORT's full graph optimizations (the graph is already fused; these are the passes a
    serving session applies anyway). ``spinning=False`` lets idle threads sleep; ``log_severity`` 3 hides
    ORT's warnings (None keeps its default)."""

    threads: int | None = None
    spinning: bool = True
    log_severity: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.threads:
            d.update(intra_op_num_threads=int(self.threads), inter_op_num_threads=1)
        d.update(execution_mode="sequential", graph_optimization_level="ORT_ENABLE_ALL")
        if not self.spinning:
            d["allow_spinning"] = False
        return d

    def to_session_options(self) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
            opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not self.spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.log_severity is not None:
            opts.log_severity_level = int(self.log_severity)
        return opts


def open_session(onnx_path: str | Path, device: str = "cpu", settings: SessionSettings | None = None,
                 device_id: int = 0) -> Any:  # fmt: skip
    """An ``InferenceSession`` on ``device`` (DeviceError when its provider is missing or a CUDA session fell
    back to the CPU; ModelError when ONNX Runtime cannot load the file)."""
    import onnxruntime as ort

    providers = provider_options(device, device_id)
    opts = (settings or SessionSettings()).to_session_options()
    try:
        sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"ONNX Runtime cannot load {onnx_path}: {str(exc).splitlines()[0]}") from exc
    if device == "cuda" and sess.get_providers()[0] != CUDA_PROVIDER:
        raise DeviceError(f"onnxruntime fell back to {sess.get_providers()[0]}; CUDA provider failed to load")
    return sess


def make_session(onnx_path: str | Path, device: str = "cpu", threads: int | None = None,
                 spinning: bool = True) -> Any:  # fmt: skip
    """:func:`open_session` with ``threads``/``spinning`` (what ``export``, ``bench`` and the tools open)."""
    return open_session(onnx_path, device, SessionSettings(threads, spinning))
