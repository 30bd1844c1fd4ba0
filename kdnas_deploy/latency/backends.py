"""Latency backends: how a model of a given architecture is built, loaded and timed on one device.

A backend turns an :class:`Architecture` into a served artifact (``prepare``), opens it for one input shape
(``open`` -> :class:`Runner`) and times runs of it. The registry :data:`BACKENDS` maps names to classes:

* ``cpu-ort``    ONNX Runtime, CPUExecutionProvider, through the deployed path (fp32 / int8)
* ``cuda-ort``   ONNX Runtime, CUDAExecutionProvider with I/O binding (fp32 / fp16), see :mod:`.cuda`
* ``cuda-torch`` PyTorch on CUDA, timed with CUDA events (fp32 / fp16), see :mod:`.cuda`

Heavy libraries are imported inside methods.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import DeviceError, TableError
from kdnas_deploy.memory import release_memory
from kdnas_deploy.timing import Timing, time_callable

DEFAULT_DEVICE_BACKEND = {"cpu": "cpu-ort", "cuda": "cuda-ort"}
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TimingPolicy:
    """Warm-up and repetitions of one reading (one fresh session)."""

    warmup: int = 5
    reps: int = 20
    min_seconds: float = 0.15
    max_reps: int = 400

    def to_dict(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "reps": self.reps, "min_seconds": self.min_seconds, "max_reps": self.max_reps}


class Runner(Protocol):
    """One loaded model bound to one input shape."""

    def time(self, policy: TimingPolicy) -> Timing: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str
    device: str
    precisions: tuple[str, ...]

    def check_available(self) -> None: ...

    def fingerprint(self) -> dict[str, Any]: ...

    def path_config(self) -> dict[str, Any]: ...

    def prepare(self, arch: Architecture, workdir: Path, seed: int = 0) -> Path: ...

    def open(self, artifact: Path, batch: int, seq: int) -> Runner: ...


def make_inputs(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids drawn once (seeded), a full attention mask and segment ids of zero: a served request."""
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(1000, 29000, size=(batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
    }


def export_deployed(arch: Architecture, workdir: Path, deploy_config: Any, seed: int = 0) -> Path:
    """Build a seeded student and send it through the deployed path into ``workdir``; returns the ONNX path.

    The steps are exactly those of :func:`kdnas_deploy.export.deploy_path.deploy` (``export_onnx`` ->
    ``optimize_onnx`` -> ``quantize_int8`` or copy, same arguments), except that the PyTorch model's weights
    are dropped as soon as the exporter has written them (``consume_model``) instead of being held through
    optimization, and memory is handed back to the OS between steps, which lowers the peak memory of a build.
    ``tests/latency/test_latency_export.py`` checks that the graph is identical to ``deploy``'s.
    Idempotent: an existing complete export (``.done`` marker) is reused, so an interrupted build resumes.
    """
    import shutil
    import tempfile

    from kdnas_deploy.export.deploy_path import ONNX_FILE, export_onnx, optimize_onnx, quantize_int8
    from kdnas_deploy.student import build_student

    done = workdir / ".done"
    final = workdir / ONNX_FILE
    if done.is_file() and final.is_file():
        return final
    workdir.mkdir(parents=True, exist_ok=True)
    with quiet_loggers(), tempfile.TemporaryDirectory(prefix=".deploy-", dir=workdir) as tmp:
        model = build_student(arch, seed=seed)
        export_onnx(model, Path(tmp) / "raw", opset=deploy_config.opset, consume_model=True)
        del model
        release_memory()
        optimized = optimize_onnx(Path(tmp) / "raw", Path(tmp) / "optimized", deploy_config)
        # the fusion pass leaves its graph objects in reference cycles: a full collection before the quantizer
        release_memory(full=deploy_config.precision == "int8")
        if deploy_config.precision == "int8":
            quantize_int8(optimized, final, scheme=deploy_config.int8_scheme)
        else:
            shutil.copy2(optimized, final)
    release_memory()
    done.write_text("ok\n")
    return final


@contextmanager
def quiet_loggers(level: int = logging.WARNING) -> Iterator[None]:
    """Silence the exporter's and quantizer's per-model chatter (the same warnings for every model).

    optimum re-configures its loggers whenever one of its modules is imported, so levels do not stick:
    ``logging.disable`` does, and is restored afterwards.
    """
    old = logging.root.manager.disable
    logging.disable(level)
    try:
        yield
    finally:
        logging.disable(old)


# ---------------------------------------------------------------------------------------------- CPU / ORT
@dataclass
class OrtRunner:
    """An ONNX Runtime session plus a fixed feed; ``run`` is what gets timed."""

    session: Any
    feed: dict[str, Any]
    run: Callable[[], object] = field(init=False)

    def __post_init__(self) -> None:
        names = {i.name for i in self.session.get_inputs()}
        feed = {k: v for k, v in self.feed.items() if k in names}
        sess = self.session
        self.run = lambda: sess.run(None, feed)

    def time(self, policy: TimingPolicy) -> Timing:
        return time_callable(self.run, policy.warmup, policy.reps, policy.min_seconds, policy.max_reps)

    def close(self) -> None:
        self.session = None
        self.run = lambda: None
        gc.collect()


def check_precision(backend: Any, precision: str) -> None:
    """Refuse a precision the backend cannot measure (TableError, exit code 2)."""
    if precision not in backend.precisions:
        raise TableError(
            f"backend {backend.name} supports precision {', '.join(backend.precisions)}, not {precision!r}"
        )


class CpuOrtBackend:
    """ONNX Runtime on the CPU, through the deployed path (export -> O2 fusions -> optional int8)."""

    name = "cpu-ort"
    device = "cpu"
    precisions = ("fp32", "int8")
    provider = "CPUExecutionProvider"

    def __init__(self, precision: str = "fp32", threads: int | None = None) -> None:
        from kdnas_deploy.export.deploy_path import DeployConfig

        check_precision(self, precision)
        self.precision = precision
        self.threads = int(threads) if threads else default_threads()
        if self.threads <= 0:
            raise TableError(f"--threads must be positive, got {threads}")
        self.deploy_config = DeployConfig.cpu_int8() if precision == "int8" else DeployConfig.cpu_fp32()

    def check_available(self) -> None:
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            raise DeviceError(f"ONNX Runtime here lacks {self.provider}")

    def session_options_dict(self) -> dict[str, Any]:
        return {
            "intra_op_num_threads": self.threads,
            "inter_op_num_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization_level": "ORT_ENABLE_ALL",
        }

    def session_options(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return so

    def path_config(self) -> dict[str, Any]:
        return {"runtime": "onnxruntime", "deploy_config": self.deploy_config.to_dict()}

    def fingerprint(self) -> dict[str, Any]:
        from kdnas_deploy.latency.fingerprint import cpu_fingerprint

        fp = cpu_fingerprint()
        fp.update(
            backend=self.name,
            execution_provider=self.provider,
            precision=self.precision,
            optimization_level=self.deploy_config.optimize,
            threads=self.threads,
            session_options=self.session_options_dict(),
            **self.path_config(),
        )
        return fp

    def prepare(self, arch: Architecture, workdir: Path, seed: int = 0) -> Path:
        return export_deployed(arch, workdir, self.deploy_config, seed)

    def open(self, artifact: Path, batch: int, seq: int) -> OrtRunner:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(artifact), self.session_options(), providers=[self.provider])
        return OrtRunner(sess, make_inputs(batch, seq))


def default_threads() -> int:
    """Physical cores (ORT's own default), at least 1."""
    import os

    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # pragma: no cover - psutil is a dependency
        n = None
    return int(n or os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------- registry
def _cuda_ort(precision: str = "fp32", threads: int | None = None) -> Backend:
    from kdnas_deploy.latency.cuda import CudaOrtBackend

    return CudaOrtBackend(precision=precision, threads=threads)


def _cuda_torch(precision: str = "fp32", threads: int | None = None) -> Backend:
    from kdnas_deploy.latency.cuda import CudaTorchBackend

    return CudaTorchBackend(precision=precision, threads=threads)


BACKENDS: dict[str, Callable[..., Backend]] = {
    "cpu-ort": CpuOrtBackend,
    "cuda-ort": _cuda_ort,
    "cuda-torch": _cuda_torch,
}
BACKEND_DEVICE = {"cpu-ort": "cpu", "cuda-ort": "cuda", "cuda-torch": "cuda"}


def resolve_backend_name(device: str, backend: str | None = None) -> str:
    if device not in DEFAULT_DEVICE_BACKEND:
        raise DeviceError(f"unknown device {device!r} (choose from {', '.join(DEFAULT_DEVICE_BACKEND)})")
    name = backend or DEFAULT_DEVICE_BACKEND[device]
    if name not in BACKENDS:
        raise DeviceError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if BACKEND_DEVICE[name] != device:
        raise DeviceError(f"backend {name!r} runs on {BACKEND_DEVICE[name]}, not on {device!r}")
    return name


def get_backend(
    device: str, precision: str = "fp32", threads: int | None = None, backend: str | None = None
) -> Backend:
    """The backend for ``device`` (``cpu``/``cuda``), checked to be usable here (DeviceError otherwise)."""
    name = resolve_backend_name(device, backend)
    instance = BACKENDS[name](precision=precision, threads=threads)
    instance.check_available()
    return instance
