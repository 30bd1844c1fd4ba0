"""One strict loader for every YAML/JSON configuration, and one preset mechanism.

- :func:`build` turns plain data (a mapping read from YAML or JSON) into a frozen dataclass, recursively:
  unknown keys are refused with a one-line error naming the key's dotted path and the keys allowed there
  (``search.episodez: unknown key (allowed here: candidates, episodes, ...)``), wrong types likewise
  (``search.episodes: expected int, got str ('three')``). Range checks stay in each dataclass's
  ``__post_init__``, so a value built in Python is checked the same way.
- :func:`read_mapping` reads a YAML or JSON file: a missing file, non-UTF-8 bytes or malformed YAML are one
  line each, never a traceback.
- :class:`Presets` is the preset mechanism (like optimum's ``AutoOptimizationConfig.O2()``): named presets
  are *data* (mappings, some shipped as YAML files inside the package in ``kdnas_deploy/presets/``), and one
  factory builds the config of a preset with overrides on top: ``SEARCH_PRESETS.get("quick", episodes=2)``.

Every error is a :class:`~kdnas_deploy.errors.ConfigError` unless the caller names another
:class:`~kdnas_deploy.errors.KdnasError` subclass (spaces raise ``SpaceError``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from kdnas_deploy.errors import ConfigError, KdnasError

T = TypeVar("T")
PRESET_DIR = Path(__file__).resolve().parent / "presets"  # shipped inside the package (package-data)


# ---------------------------------------------------------------------------------------------- files
def read_mapping(path: str | Path, what: str = "config", error: type[KdnasError] = ConfigError) -> dict[str, Any]:
    """The mapping a YAML (or JSON: a YAML subset) file holds; an empty file is ``{}``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); save the {what} file as UTF-8") from None
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}: not valid YAML{where} ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} file must hold a mapping, got {type(data).__name__}")
    return data


def load(cls: type[T], path: str | Path, what: str = "config", error: type[KdnasError] = ConfigError) -> T:
    """``build(cls, read_mapping(path))``."""
    return build(cls, read_mapping(path, what, error), error=error)


# ---------------------------------------------------------------------------------------------- builder
def build(tp: Any, value: Any, path: str = "", error: type[KdnasError] = ConfigError) -> Any:
    """Convert plain data to ``tp`` (a dataclass, or a typing form of one), strictly (see the module doc)."""
    return _Builder(error).build(tp, value, path)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


class _Builder:
    def __init__(self, error: type[KdnasError]) -> None:
        self.error = error

    def fail(self, path: str, message: str) -> KdnasError:
        return self.error(f"{path or '<config>'}: {message}")

    def build(self, tp: Any, value: Any, path: str) -> Any:
        if tp is Any:
            return value
        if dataclasses.is_dataclass(tp):
            return self.dataclass(tp, value, path)
        origin = typing.get_origin(tp)
        if origin in (types.UnionType, typing.Union):
            return self.union(tp, value, path)
        if origin is typing.Literal:
            choices = typing.get_args(tp)
            if value not in choices:
                raise self.fail(path, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
            return value
        if origin is tuple:
            return self.sequence(tp, value, path)
        if origin in (dict, Mapping) or tp is dict:
            return self.mapping(tp, value, path)
        return self.scalar(tp, value, path)

    def dataclass(self, tp: Any, value: Any, path: str) -> Any:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp) if f.init]
        for key in value:
            if key not in names:
                where = f"{path}.{key}" if path else str(key)
                raise self.error(f"{where}: unknown key (allowed here: {', '.join(sorted(names))})")
        kwargs = {k: self.build(hints[k], v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        missing = [f.name for f in dataclasses.fields(tp) if f.init and f.name not in kwargs
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise self.fail(path, f"missing key(s) {', '.join(missing)}")
        try:
            return tp(**kwargs)
        except TypeError as exc:  # pragma: no cover - the checks above catch what a constructor would
            raise self.fail(path, str(exc)) from None

    def union(self, tp: Any, value: Any, path: str) -> Any:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return self.build(arg, value, path)
            except KdnasError as exc:
                errors.append(str(exc))
        if len(errors) < 2:
            raise self.error(errors[0] if errors else f"{path}: invalid value {value!r}")
        prefix = f"{path or '<config>'}: "  # every alternative's complaint, under one path: "... or ..."
        raise self.fail(path, " or ".join(e.removeprefix(prefix) for e in errors))

    def sequence(self, tp: Any, value: Any, path: str) -> tuple[Any, ...]:
        args = typing.get_args(tp)
        if isinstance(value, Mapping) and dataclasses.is_dataclass(args[0]):  # one item given as a mapping
            value = [value]
        if not isinstance(value, list | tuple):
            raise self.fail(path, f"expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(self.build(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise self.fail(path, f"expected {len(args)} items, got {len(value)}")
        return tuple(self.build(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))

    def mapping(self, tp: Any, value: Any, path: str) -> dict[Any, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping, got {type(value).__name__}")
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        out = {}
        for k, v in value.items():
            if key_tp is int and isinstance(k, str) and k.strip().lstrip("-").isdigit():
                k = int(k)  # YAML/JSON keys "128" of a mapping keyed by int
            out[self.build(key_tp, k, f"{path}.{k}")] = self.build(val_tp, v, f"{path}.{k}")
        return out

    def scalar(self, tp: Any, value: Any, path: str) -> Any:
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(path, f"expected a number, got {type(value).__name__} ({value!r})")
            if not math.isfinite(value):
                raise self.fail(path, f"expected a finite number, got {value!r}")
            return float(value)
        if tp in (int, str, bool):
            if type(value) is not tp:
                raise self.fail(path, f"expected {_type_name(tp)}, got {type(value).__name__} ({value!r})")
            return value
        raise self.fail(path, f"unsupported type {_type_name(tp)}")


def to_plain(obj: Any) -> Any:
    """Dataclasses as mappings, tuples as lists, recursively (what :func:`build` reads back)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------------------------- presets
class Presets(Generic[T]):
    """Named presets of one kind of config: data (mappings) plus one factory that builds a config from a
    preset's mapping updated with overrides. Presets are given as mappings, as YAML files in a folder (one
    preset per file, named after the file), or both."""

    def __init__(
        self,
        kind: str,
        factory: Callable[[dict[str, Any]], T],
        data: Mapping[str, Mapping[str, Any]] | None = None,
        folder: str | Path | None = None,
        error: type[KdnasError] = ConfigError,
    ) -> None:
        self.kind, self.factory, self.error = kind, factory, error
        self._data = {k: dict(v) for k, v in (data or {}).items()}
        self._folder = Path(folder) if folder is not None else None

    def _files(self) -> dict[str, Path]:
        if self._folder is None or not self._folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(self._folder.glob("*.yaml"))}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self._data, *self._files()]))

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __getitem__(self, name: str) -> Callable[..., T]:
        """The factory of one preset: ``PRESETS["quick"](**overrides)`` is ``PRESETS.get("quick", ...)``."""
        if name not in self:
            raise KeyError(name)
        return functools.partial(self.get, name)

    def data(self, name: str) -> dict[str, Any]:
        """The preset's mapping (a copy)."""
        if name in self._data:
            return dict(self._data[name])
        files = self._files()
        if name not in files:
            raise self.error(f"unknown {self.kind} preset {name!r} (choose from {', '.join(self.names)})")
        return read_mapping(files[name], f"{self.kind} preset", self.error)

    def path(self, name: str) -> Path | None:
        """The file a preset is shipped in (None for presets given as data)."""
        return None if name in self._data else self._files().get(name)

    def get(self, name: str, **overrides: Any) -> T:
        """The config of preset ``name`` with ``overrides`` on top (``None`` values ignored)."""
        return self.factory(self.merged(name, **overrides))

    def merged(self, name: str, **overrides: Any) -> dict[str, Any]:
        data = self.data(name)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return data


__all__ = ["PRESET_DIR", "Presets", "build", "load", "read_mapping", "to_plain"]
