"""The pipeline configuration (``kdnas-deploy run CONFIG.yaml``): frozen dataclasses checked before any work.

Every section is a dataclass read by the one strict loader (:mod:`kdnas_deploy.config`): unknown keys and
wrong types are refused with the key's dotted path, e.g. ``search.episodes: expected int, got str``. The
``search`` section *is* the search's :class:`~kdnas_deploy.search.config.SearchSettings` (every search setting,
``reward``, ``controller`` included) plus ``executor: {name: ray, options: {...}}``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kdnas_deploy.config import build, read_mapping, to_plain
from kdnas_deploy.errors import ConfigError, KdnasError
from kdnas_deploy.limits import MAX_EPOCHS, check_float, check_int
from kdnas_deploy.search.config import ExecutorConfig, SearchSettings
from kdnas_deploy.search.executors import EXECUTORS

PIPELINE_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TaskSection:
    name: str = "builtin"
    data_dir: str | None = None


@dataclass(frozen=True)
class TeacherSection:
    """Either ``path`` (a fine-tuned sequence classifier) or ``finetune_from`` (a backbone to fine-tune).

    ``allow_weak``: run the search even when the teacher is within the weak-teacher margin of the task's
    trivial baseline (by default ``run`` stops before the search with a one-line error)."""

    path: str | None = None
    finetune_from: str = "minilm-l6"
    # ``auto``: the recipe of the train split's size (kdnas_deploy.distill.recipes); or a registered preset name
    preset: str = "auto"
    # None: the preset's (``auto``: epochs from a minimum of optimizer steps, length from the p99 of the train
    # split's token lengths); the student is distilled and scored at the teacher's ``max_seq_len``
    epochs: float | None = None
    learning_rate: float | None = None
    max_seq_len: int | None = None
    batch_size: int | None = None
    max_train_samples: int | None = None
    allow_weak: bool = False

    def __post_init__(self) -> None:
        from kdnas_deploy.distill.recipes import preset_names

        if self.preset not in preset_names():
            choices = ", ".join(preset_names())
            raise ConfigError(f"teacher.preset: unknown preset {self.preset!r} (choose from {choices})")
        if self.epochs is not None:
            check_float("teacher.epochs", self.epochs, high=MAX_EPOCHS)
        if self.learning_rate is not None:
            check_float("teacher.learning_rate", self.learning_rate, high=1.0)
        if self.max_seq_len is not None and not 8 <= self.max_seq_len <= 512:
            raise ConfigError(f"teacher.max_seq_len: must be in [8, 512], got {self.max_seq_len}")
        for name in ("max_train_samples", "batch_size"):
            if getattr(self, name) is not None:
                check_int(f"teacher.{name}", getattr(self, name), "count")

    def overrides(self) -> dict[str, Any]:
        """The recipe settings given (None: the preset's)."""
        names = ("epochs", "learning_rate", "max_seq_len", "batch_size", "max_train_samples")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


@dataclass(frozen=True)
class DeviceSection:
    """One deployment target: a latency table (reused or built) and a latency budget on it. ``backend`` names
    the runtime (``cpu-ort``, ``cpu-openvino``, ``cuda-ort``, ``cuda-torch``; default: the device's) that the
    table prices at ``precision``; ``auto``: the fastest one installed here, timed on the probe model by ``run``."""

    name: str = "cpu"
    device: str = "cpu"
    backend: str | None = None
    precision: str = "fp32"
    threads: int = 2
    table: str | None = None
    budget_ms: float | None = None
    budget_fraction: float | None = 0.33  # of the teacher's predicted latency, when budget_ms is not given
    # "BACKEND/PRECISION" (e.g. cpu-ort/fp32): budget_fraction of the teacher on that path of this device (its
    # table, found or built like the device's own) instead of on the device's path. An int8 student's budget then
    # stays "1/6 of the fp32 teacher" whichever int8 backend `auto` picks.
    budget_of: str | None = None
    # Share of the budget kept free for prediction error and machine drift: the search must fit
    # budget x (1 - headroom), the report checks the measured student against the budget itself. "auto": from the
    # table's validated error (kdnas_deploy/latency/headroom.py: its p95 under-prediction, within 3-15%).
    headroom: float | Literal["auto"] = 0.0

    def __post_init__(self) -> None:
        from kdnas_deploy.latency.backends import BACKEND_DEVICE, BACKENDS, resolve_backend_name

        check_int(f"device {self.name!r}: threads", self.threads, "threads")
        if self.budget_of is not None:
            self.budget_reference()  # a ConfigError for a path this device has no backend for
        if self.backend == "auto":  # the fastest backend installed here, timed by run (kdnas_deploy.latency.pick)
            if not [n for n, c in BACKENDS.items() if BACKEND_DEVICE[n] == self.device
                    and self.precision in c.precisions]:  # fmt: skip
                raise ConfigError(f"device {self.name!r}: no backend of {self.device} prices {self.precision!r}")
            return
        try:
            backend = resolve_backend_name(self.device, self.backend)
        except KdnasError as exc:
            raise ConfigError(f"device {self.name!r}: {exc}") from None
        if self.precision not in BACKENDS[backend].precisions:
            choices = ", ".join(BACKENDS[backend].precisions)
            raise ConfigError(f"device {self.name!r}: precision {self.precision!r} is not one of {choices} "
                              f"(backend {backend})")  # fmt: skip

    def budget_reference(self) -> DeviceSection | None:
        """The device whose teacher prediction ``budget_fraction`` applies to: this one on ``budget_of``'s backend
        and precision (no table, no budget of its own), or None without ``budget_of``."""
        from kdnas_deploy.latency.backends import BACKEND_DEVICE, BACKENDS

        if self.budget_of is None:
            return None
        backend, sep, precision = str(self.budget_of).partition("/")
        where = f"device {self.name!r}: budget_of {self.budget_of!r}"
        if not sep or backend not in BACKENDS or BACKEND_DEVICE[backend] != self.device:
            ours = ", ".join(n for n in BACKENDS if BACKEND_DEVICE[n] == self.device)
            raise ConfigError(f"{where} must be BACKEND/PRECISION with a backend of {self.device} ({ours})")
        if precision not in BACKENDS[backend].precisions:
            raise ConfigError(f"{where}: {backend} prices {', '.join(BACKENDS[backend].precisions)}")
        if self.budget_ms is not None:
            raise ConfigError(f"{where} goes with budget_fraction, not budget_ms")
        return self.on_path(backend, precision, "budget-ref")

    def on_path(self, backend: str, precision: str, tag: str) -> DeviceSection:
        """This device served by ``backend`` at ``precision``, named ``NAME-TAG`` (its own latency stage), with
        no given table and no budget of its own: what a budget reference or a backend fallback is priced on."""
        return dataclasses.replace(self, name=f"{self.name}-{tag}", backend=backend, precision=precision,
                                   table=None, budget_of=None)  # fmt: skip

    @property
    def backend_name(self) -> str:
        """The backend this device is priced and served with (``backend``, or the device's default); ``auto`` is
        resolved by ``run`` before any stage uses it."""
        from kdnas_deploy.latency.backends import resolve_backend_name

        if self.backend == "auto":
            raise ConfigError(f"device {self.name!r}: backend auto is not resolved yet")

        return resolve_backend_name(self.device, self.backend)


@dataclass(frozen=True)
class LatencySection:
    """The grid point the run predicts at, and what it does when no table matches this machine: ``transfer:
    auto`` transfers a table of another machine (same space, device, precision, ...) from a few measured models
    (``latency transfer``, ~1 min) when one exists, ``never`` always builds a full table (~4 min)."""

    batch: int = 1
    # a length, or ``auto``: the task's ``seq_quantile`` token length (p95 by default, or ``mean``), see
    # kdnas_deploy.pipeline.seq
    seq: int | Literal["auto"] = 128
    seq_quantile: float | Literal["mean"] = 0.95
    transfer: Literal["auto", "never"] = "auto"

    def __post_init__(self) -> None:
        check_int("latency.batch", self.batch, "batch")
        if self.seq != "auto":
            check_int("latency.seq", self.seq, "seq")
        if self.seq_quantile != "mean":
            check_float("latency.seq_quantile", self.seq_quantile, low=0.0, high=1.0)


@dataclass(frozen=True, kw_only=True)
class SearchSection(SearchSettings):
    """The search settings (:class:`~kdnas_deploy.search.config.SearchSettings`: strategy, episodes, reward,
    controller, ...; the pipeline supplies teacher, task, budgets, batch and seq) and where candidates run."""

    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.executor.name not in EXECUTORS:
            raise ConfigError(
                f"search.executor.name: unknown executor {self.executor.name!r} (choose from {', '.join(EXECUTORS)})"
            )


@dataclass(frozen=True)
class ExportSection:
    optimize: str = "O2"
    quantize: str = "none"
    # the export's dev-metric check (always on in ``run``): largest drop of the task metric, in points (x100)
    max_metric_drop: float = 1.0

    def __post_init__(self) -> None:
        from kdnas_deploy.runtime.deploy import OPT_LEVELS

        if self.optimize not in OPT_LEVELS:
            raise ConfigError(f"export.optimize: unknown level {self.optimize!r} (choose from {', '.join(OPT_LEVELS)})")
        if self.quantize not in ("none", "int8"):
            raise ConfigError(f"export.quantize: must be none or int8, got {self.quantize!r}")
        check_float("export.max_metric_drop", self.max_metric_drop, low=0.0, high=100.0, low_open=False)


@dataclass(frozen=True)
class BenchSection:
    """The fixed-shape bench (batch x seq) and the student's end-to-end bench (``e2e_requests`` dev texts through
    tokenizer and session); ``check`` names the figure the budget is checked on: ``model`` (the fixed-shape
    median) or ``end_to_end`` (the end-to-end p50)."""

    batch: int = 1
    seq: int = 128
    threads: int = 2
    e2e_requests: int = 200
    check: Literal["model", "end_to_end"] = "model"

    def __post_init__(self) -> None:
        check_int("bench.batch", self.batch, "batch")
        check_int("bench.seq", self.seq, "seq")
        check_int("bench.threads", self.threads, "threads")
        check_int("bench.e2e_requests", self.e2e_requests, "count")


@dataclass(frozen=True)
class PipelineConfig:
    space: str = "minilm-l6"
    task: TaskSection = field(default_factory=TaskSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    devices: tuple[DeviceSection, ...] = (DeviceSection(),)
    latency: LatencySection = field(default_factory=LatencySection)
    search: SearchSection = field(default_factory=SearchSection)
    export: ExportSection = field(default_factory=ExportSection)
    bench: BenchSection = field(default_factory=BenchSection)
    schema_version: int = PIPELINE_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Any, base_dir: Path | None = None) -> PipelineConfig:
        config = build(cls, data, "")
        if config.schema_version != PIPELINE_SCHEMA_VERSION:
            raise ConfigError(f"schema_version: {config.schema_version} is not supported ({PIPELINE_SCHEMA_VERSION})")
        if not config.devices:
            raise ConfigError("devices: at least one device is needed")
        names = [d.name for d in config.devices]
        if len(set(names)) != len(names):
            raise ConfigError(f"devices: names must be unique, got {names}")
        for i, dev in enumerate(config.devices):
            if dev.budget_ms is None and dev.budget_fraction is None:
                raise ConfigError(f"devices[{i}]: give budget_ms or budget_fraction")
            for key in ("budget_ms", "budget_fraction"):
                value = getattr(dev, key)
                if value is not None and not 0 < value < math.inf:
                    raise ConfigError(f"devices[{i}].{key}: must be > 0 and finite, got {value}")
            if dev.headroom != "auto" and not 0 <= dev.headroom < 1:
                raise ConfigError(f"devices[{i}].headroom: must be in [0, 1), got {dev.headroom}")
        for key in ("batch", "seq"):
            value = getattr(config.search, key)
            if value is not None and value != getattr(config.latency, key):
                raise ConfigError(f"search.{key}: the search predicts at latency.{key}; leave search.{key} out")
        if base_dir is not None:
            config = _resolve_paths(config, base_dir)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineConfig:
        return cls.from_dict(read_mapping(path), base_dir=Path(path).parent)


def _resolve_paths(config: PipelineConfig, base: Path) -> PipelineConfig:
    """Relative paths in a config file are relative to the file's folder (then to the cwd if that fails)."""

    def fix(p: str | None) -> str | None:
        if p is None or Path(p).is_absolute() or not (base / p).exists():
            return p
        return str((base / p).resolve())

    space = config.space if not config.space.endswith((".yaml", ".yml")) else fix(config.space) or config.space
    task = dataclasses.replace(config.task, data_dir=fix(config.task.data_dir))
    teacher = dataclasses.replace(config.teacher, path=fix(config.teacher.path))
    devices = tuple(dataclasses.replace(d, table=fix(d.table)) for d in config.devices)
    return dataclasses.replace(config, space=space, task=task, teacher=teacher, devices=devices)
