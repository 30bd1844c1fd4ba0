"""The pipeline configuration (``kdnas-deploy run CONFIG.yaml``): frozen dataclasses checked before any work.

Every section is a dataclass; unknown keys and wrong types are refused with the key's dotted path, e.g.
``search.episodes: expected int, got str``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import ConfigError

PIPELINE_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TaskSection:
    name: str = "builtin"
    data_dir: str | None = None


@dataclass(frozen=True)
class TeacherSection:
    """Either ``path`` (a fine-tuned sequence classifier) or ``finetune_from`` (a backbone to fine-tune)."""

    path: str | None = None
    finetune_from: str = "minilm-l6"
    epochs: float = 2.0
    max_train_samples: int | None = None


@dataclass(frozen=True)
class DeviceSection:
    """One deployment target: a latency table (reused or built) and a latency budget on it."""

    name: str = "cpu"
    device: str = "cpu"
    precision: str = "fp32"
    threads: int = 2
    table: str | None = None
    budget_ms: float | None = None
    budget_fraction: float | None = 0.33  # of the teacher's predicted latency, when budget_ms is not given
    # Share of the budget kept free for prediction error and machine drift: the search must fit
    # budget x (1 - headroom), the report checks the measured student against the budget itself.
    headroom: float = 0.0


@dataclass(frozen=True)
class LatencySection:
    batch: int = 1
    seq: int = 128


@dataclass(frozen=True)
class SearchSection:
    strategy: str = "kdnas"
    episodes: int = 4
    candidates: int = 200
    top_k: int = 4
    proxy_fraction: float = 0.1
    proxy_epochs: float = 1.0
    final_top: int = 1
    final_epochs: float = 3.0
    hard_budget: bool = False
    alpha: float = -0.07  # reward latency exponent within budget (0: accuracy alone decides among feasible)
    beta: float = -0.07  # reward latency exponent beyond budget
    seed: int = 0


@dataclass(frozen=True)
class ExportSection:
    optimize: str = "O2"
    quantize: str = "none"


@dataclass(frozen=True)
class BenchSection:
    batch: int = 1
    seq: int = 128
    threads: int = 2


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
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: Any, base_dir: Path | None = None) -> PipelineConfig:
        config = _build(cls, data, "")
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
                if value is not None and value <= 0:
                    raise ConfigError(f"devices[{i}].{key}: must be > 0, got {value}")
            if not 0 <= dev.headroom < 1:
                raise ConfigError(f"devices[{i}].headroom: must be in [0, 1), got {dev.headroom}")
        if not 0 < config.search.proxy_fraction <= 1:
            raise ConfigError(f"search.proxy_fraction: must be in (0, 1], got {config.search.proxy_fraction}")
        if base_dir is not None:
            config = _resolve_paths(config, base_dir)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineConfig:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(data, base_dir=path.parent)


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


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _build(tp: Any, value: Any, path: str) -> Any:
    """Convert plain YAML data to ``tp``, refusing unknown keys and wrong types with the dotted key path."""
    where = path or "<config>"
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            key = f"{path}.{unknown[0]}" if path else str(unknown[0])
            raise ConfigError(f"{key}: unknown key (allowed here: {', '.join(sorted(names))})")
        kwargs = {k: _build(hints[k], v, f"{path}.{k}" if path else k) for k, v in value.items()}
        return tp(**kwargs)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _build(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, dict):  # a single device given as a mapping
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(_build(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} ({value!r})")
        return float(value)
    if tp in (int, str, bool):
        if type(value) is not tp:
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} ({value!r})")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [_to_plain(v) for v in obj]
    return obj
