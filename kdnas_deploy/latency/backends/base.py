"""The backend contract: how a model of a given architecture is built, loaded and timed on one device.

A backend turns an :class:`Architecture` into a served artifact (``prepare``), opens it for one input shape
(``open`` -> :class:`~kdnas_deploy.runtime.runners.Runner`) and describes itself (``path_config`` is what a
table's deployed path must match; ``fingerprint`` what it was measured on). ONNX Runtime backends send the
model through :func:`kdnas_deploy.runtime.deploy.deploy` itself, the function ``export`` ships through.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import TableError
from kdnas_deploy.runtime.deploy import ONNX_FILE, DeployConfig, deploy, quiet_loggers
from kdnas_deploy.runtime.devices import default_threads
from kdnas_deploy.runtime.runners import Runner

DONE_MARKER = ".done"


def deploy_student(arch: Architecture, workdir: Path, config: DeployConfig, seed: int = 0) -> Path:
    """A seeded student of ``arch`` sent through the deployed path into ``workdir``; returns its ONNX path.

    The model is built only to be deployed, so :func:`deploy` consumes it (lower peak memory, same graph).
    Idempotent: an existing complete export (``.done`` marker) is reused, so an interrupted build resumes.
    """
    from kdnas_deploy.student import build_student

    done, final = workdir / DONE_MARKER, workdir / ONNX_FILE
    if done.is_file() and final.is_file():
        return final
    with quiet_loggers():
        deploy(build_student(arch, seed=seed), workdir, config, consume=True)
    done.write_text("ok\n")
    return final


class Backend(ABC):
    """One way of serving a model on one device, at one precision and thread count."""

    name: ClassVar[str]
    device: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    provider: ClassVar[str]

    def __init__(self, precision: str = "fp32", threads: int | None = None) -> None:
        if precision not in self.precisions:
            raise TableError(f"backend {self.name} supports precision {', '.join(self.precisions)}, not {precision!r}")
        self.precision = precision
        self.threads = int(threads) if threads else default_threads()
        if self.threads <= 0:
            raise TableError(f"--threads must be positive, got {threads}")

    @abstractmethod
    def check_available(self) -> None:
        """DeviceError (one line) when this backend cannot run here."""

    @abstractmethod
    def path_config(self) -> dict[str, Any]:
        """What a table's deployed path must match to be measured again with this backend."""

    @abstractmethod
    def machine_fingerprint(self) -> dict[str, Any]:
        """The machine and software stack (CPU, or CPU and GPU)."""

    @abstractmethod
    def prepare(self, arch: Architecture, workdir: Path, seed: int = 0) -> Path:
        """Build the served artifact of ``arch`` in ``workdir``; returns its path."""

    @abstractmethod
    def open(self, artifact: Path, batch: int, seq: int) -> Runner:
        """The artifact loaded and bound to one (batch, seq) input."""

    def open_shapes(self, artifact: Path) -> Callable[[int, int], Runner]:
        """``artifact`` ready for several input shapes: the returned function binds it to one (batch, seq).

        Backends whose loaded model serves every shape (an ONNX Runtime session, as a server keeps one for
        all request lengths) load it once and share it between the runners; the default opens it afresh per
        shape. A multi-length table build reads each model at its lengths back to back through this.
        """
        return partial(self.open, artifact)

    @property
    def optimization_level(self) -> str:
        return "none"

    def extra_fingerprint(self) -> dict[str, Any]:
        return {}

    def fingerprint(self) -> dict[str, Any]:
        fp = self.machine_fingerprint()
        fp.update(backend=self.name, execution_provider=self.provider, precision=self.precision,
                  optimization_level=self.optimization_level, threads=self.threads,
                  **self.extra_fingerprint(), **self.path_config())  # fmt: skip
        return fp


class DeployedBackend(Backend):
    """A backend serving ONNX graphs built by the deployed path (one :class:`DeployConfig` per precision)."""

    deploy_configs: ClassVar[dict[str, DeployConfig]]

    def __init__(self, precision: str = "fp32", threads: int | None = None) -> None:
        super().__init__(precision, threads)
        self.deploy_config = self.deploy_configs[precision]

    @property
    def optimization_level(self) -> str:
        return self.deploy_config.optimize

    def prepare(self, arch: Architecture, workdir: Path, seed: int = 0) -> Path:
        return deploy_student(arch, workdir, self.deploy_config, seed)
