"""Shared typed options of the ``kdnas-deploy`` commands (the model: huggingface_hub's ``cli/_cli_utils.py``).

Every number a user types goes through a click type that refuses what no command can use (zero batch sizes,
negative thread counts, ``nan``/``inf`` floats, repeated architecture keys), so a bad number is one usage
line and exit code 2 before anything is read or written. Options that several commands share (``--task``,
``--data-dir``, ``--threads``, ``--batch``, ``--seq``, ``--out``, ``--force``, ``--json``, ``--no-progress``)
are declared once here, with one default and one help text.

This module imports nothing heavy: ``--help`` of every command must stay instant.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kdnas_deploy.limits import MAX_EPOCHS, MAX_SEQ, RANGES

F = TypeVar("F", bound=Callable[..., Any])

TASK_HELP = "GLUE name (sst2, mrpc, cola, stsb, qnli, rte, mnli, qqp, wnli), 'builtin', or a CSV/TSV/JSON file."
DATA_DIR_HELP = "Folder in the original GLUE layout (DIR/SST-2/train.tsv); default $KDNAS_GLUE_DIR."
THREADS_DEFAULT = "[default: this machine's physical cores]."
THREADS_HELP = "Intra-op threads (ONNX Runtime and torch) " + THREADS_DEFAULT


# ---------------------------------------------------------------------------------------------- number types
PositiveInt = click.IntRange(min=1)
NonNegativeInt = click.IntRange(min=0)
# Counts with the upper limits of kdnas_deploy.limits (a value above one overflows, allocates terabytes or
# runs for years): 1e12 threads or rounds is one usage line, not a traceback or a hung command.
Threads = click.IntRange(*RANGES["threads"])
Batch = click.IntRange(*RANGES["batch"])
Seq = click.IntRange(*RANGES["seq"])
Count = click.IntRange(*RANGES["count"])
Count0 = click.IntRange(*RANGES["count0"])
Seed = click.IntRange(*RANGES["seed"])
Workers = click.IntRange(0, RANGES["threads"][1])  # parallel exporter processes; 0: in this process


class FiniteFloat(click.ParamType):
    """A float that is finite (no ``nan``, no ``inf``), optionally within ``[min, max]`` (open or closed)."""

    name = "float"

    def __init__(
        self, min: float | None = None, max: float | None = None, min_open: bool = False, max_open: bool = False
    ) -> None:
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def _range(self) -> str:
        lo = None if self.min is None else f"{self.min} {'<' if self.min_open else '<='} "
        hi = None if self.max is None else f" {'<' if self.max_open else '<='} {self.max}"
        if lo is not None and hi is None:
            return f"x {'>' if self.min_open else '>='} {self.min}"
        return f"{lo or ''}x{hi or ''}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float) and math.isfinite(value) and self._inside(value):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if not self._inside(number):
            self.fail(f"{value} is not in the range {self._range()}", param, ctx)
        return number

    def _inside(self, x: float) -> bool:
        if self.min is not None and (x < self.min or (self.min_open and x == self.min)):
            return False
        return not (self.max is not None and (x > self.max or (self.max_open and x == self.max)))

    def __repr__(self) -> str:
        return f"FiniteFloat({self._range()})"


Finite = FiniteFloat()
PositiveFloat = FiniteFloat(min=0.0, min_open=True)
Epochs = FiniteFloat(min=0.0, max=MAX_EPOCHS, min_open=True)
NonNegativeFloat = FiniteFloat(min=0.0)
Probability = FiniteFloat(min=0.0, max=1.0, min_open=True)  # (0, 1]
UnitInterval = FiniteFloat(min=0.0, max=1.0)  # [0, 1]


class IntList(click.ParamType):
    """A comma-separated list of integers >= ``min`` (``--seq 32,64,128``); returns a tuple."""

    name = "ints"

    def __init__(self, min: int = 1, max: int = MAX_SEQ) -> None:
        self.min, self.max = min, max

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        out = []
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                number = int(part)
            except ValueError:
                self.fail(f"{part!r} is not an integer", param, ctx)
            if number < self.min:
                self.fail(f"{number} is below the minimum {self.min}", param, ctx)
            if number > self.max:
                self.fail(f"{number} is above the maximum {self.max}", param, ctx)
            out.append(number)
        if not out:
            self.fail(f"{value!r} holds no number", param, ctx)
        return tuple(out)


PositiveIntList = IntList(min=1)


def _flatten(ctx: click.Context, param: click.Parameter, value: Any) -> list[int] | None:
    """Callback of a ``multiple=True`` :class:`IntList` option: ``--seq 32,64 --seq 128`` -> [32, 64, 128]."""
    if value is None:
        return None
    flat = [n for group in value for n in (group if isinstance(group, tuple) else (group,))]
    return flat or None


# ---------------------------------------------------------------------------------------------- architecture
_KEY_NAMES = {"L": "num_layers", "H": "hidden_size", "A": "num_heads", "F": "ffn_size"}


class ArchType(click.ParamType):
    """An architecture: ARCH.json, inline JSON or ``L=4,H=256,A=4,F=1024``; a key given twice is refused.

    Returns the :class:`~kdnas_deploy.arch.Architecture` (its own checks give the other messages).
    """

    name = "arch"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from kdnas_deploy.arch import Architecture
        from kdnas_deploy.errors import ArchitectureError

        if isinstance(value, Architecture):
            return value
        text = str(value).strip()
        try:
            repeated = _repeated_keys(text)
            if repeated:
                self.fail(f"{text!r} gives {', '.join(repeated)} more than once", param, ctx)
            return Architecture.parse(text)
        except ArchitectureError as exc:
            self.fail(str(exc), param, ctx)


def _repeated_keys(text: str) -> list[str]:
    """Keys named twice in an inline ``K=V`` list or a JSON object (``L=2,L=3``; ``L`` and ``num_layers``)."""
    if text.startswith("{") or text.lower().endswith(".json"):
        if not text.startswith("{"):
            path = Path(text)
            if not path.is_file():
                return []
            text = path.read_text(encoding="utf-8", errors="replace")
        seen: list[str] = []

        def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            keys = [k for k, _ in pairs]
            seen.extend(sorted({k for k in keys if keys.count(k) > 1}))
            return dict(pairs)

        try:
            json.loads(text, object_pairs_hook=hook)
        except ValueError:
            return []  # Architecture.parse reports the syntax error
        return seen
    canon = []
    for part in filter(None, (p.strip() for p in re.split(r"[,\s]+", text))):
        key = part.split("=", 1)[0].strip()
        canon.append(_KEY_NAMES.get(key.upper(), key) if len(key) == 1 else key)
    return sorted({k for k in canon if canon.count(k) > 1})


ARCH = ArchType()


# ---------------------------------------------------------------------------------------------- path types
class ExistingPath(click.Path):
    """A path that must exist (``not found`` otherwise); ``dir_okay``/``file_okay`` as for ``click.Path``."""

    def __init__(self, file_okay: bool = True, dir_okay: bool = True) -> None:
        super().__init__(file_okay=file_okay, dir_okay=dir_okay, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value)
        if not path.exists():
            self.fail(f"{path} not found", param, ctx)
        if path.is_dir() and not self.dir_okay:
            self.fail(f"{path} is a directory, expected a file", param, ctx)
        if not path.is_dir() and not self.file_okay:
            self.fail(f"{path} is a file, expected a directory", param, ctx)
        return path


class OutputPath(click.ParamType):
    """A path the command will write: a file (``kind='file'``) or a folder (``kind='dir'``).

    Refused up front: a file path that is an existing directory, a folder path that is an existing file, a
    parent that is a file, and a location whose nearest existing folder is not writable.
    """

    name = "path"

    def __init__(self, kind: str = "file") -> None:
        if kind not in ("file", "dir"):
            raise ValueError(kind)
        self.kind = kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value)
        if self.kind == "file" and path.is_dir():
            self.fail(f"{path} is a directory, expected a file path", param, ctx)
        if self.kind == "dir" and path.exists() and not path.is_dir():
            self.fail(f"{path} is an existing file, expected a folder", param, ctx)
        parent = path.parent if self.kind == "file" or not path.exists() else path
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            self.fail(f"{parent} is a file, so {path} cannot be created", param, ctx)
        if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
            self.fail(f"{parent} is not writable", param, ctx)
        return path


OUT_FILE = OutputPath("file")
OUT_DIR = OutputPath("dir")


# ---------------------------------------------------------------------------------------------- thread default
def _resolve_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> int:
    if value is not None:
        return value
    from kdnas_deploy.runtime.devices import default_threads  # on use: --help imports no lower layer

    return default_threads()


# ---------------------------------------------------------------------------------------------- decorators
def task_option(
    required: bool = True, help: str = TASK_HELP, name: str = "--task", dest: str = "task_name"
) -> Callable[[F], F]:
    return click.option(name, dest, required=required, default=None, metavar="TASK", help=help)


def data_dir_option(help: str = DATA_DIR_HELP) -> Callable[[F], F]:
    return click.option("--data-dir", type=ExistingPath(file_okay=False), default=None, help=help)


def threads_option(help: str = THREADS_HELP) -> Callable[[F], F]:
    """``--threads N`` (>= 1); the command receives an int, physical cores when not given."""
    return click.option("--threads", type=Threads, default=None, callback=_resolve_threads, help=help)


def batch_option(default: int | None = 1, help: str = "Batch size.", name: str = "--batch") -> Callable[[F], F]:
    return click.option(name, type=Batch, default=default, show_default=default is not None, help=help)


def seq_option(default: int | None = 128, help: str = "Sequence length.", name: str = "--seq") -> Callable[[F], F]:
    return click.option(name, type=Seq, default=default, show_default=default is not None, help=help)


def _int_list_option(flag: str, dest: str, default: str, help: str, kind: IntList) -> Callable[[F], F]:
    return click.option(
        flag, dest, type=kind, multiple=True, default=(default,), show_default=True, callback=_flatten,
        help=help,
    )  # fmt: skip


def batches_option(default: str = "1", help: str = "Batch size(s): 1 or 1,8 (repeatable).") -> Callable[[F], F]:
    return _int_list_option("--batch", "batches", default, help, IntList(1, RANGES["batch"][1]))


def seqs_option(default: str = "128", help: str = "Sequence length(s): 128 or 32,64,128 (repeatable).") -> Callable[[F], F]:  # noqa: E501
    return _int_list_option("--seq", "seqs", default, help, PositiveIntList)


def out_option(
    kind: str = "dir", required: bool = True, help: str | None = None, dest: str = "out"
) -> Callable[[F], F]:
    default_help = "Output folder." if kind == "dir" else "Output file."
    return click.option(
        "--out", dest, type=OutputPath(kind), required=required, default=None, help=help or default_help
    )


def force_option(help: str = "Replace a non-empty --out.") -> Callable[[F], F]:
    return click.option("--force", is_flag=True, help=help)


def json_option(help: str = "Also write the result as JSON to this file.", dest: str = "json_path") -> Callable[[F], F]:
    return click.option("--json", dest, type=OUT_FILE, default=None, metavar="FILE", help=help)


def hidden_alias(old: str, target: str, **attrs: Any) -> Callable[[F], F]:
    """Keep ``old`` (e.g. ``--task``) as a hidden alias of the option whose parameter is ``target``.

    The alias fills ``target`` when that option was not given; apply it *below* the target's decorator.
    """
    dest = f"_alias_{target}"

    def deco(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            value = kwargs.pop(dest, None)
            if value not in (None, False) and kwargs.get(target) in (None, False):
                kwargs[target] = value
            return f(*args, **kwargs)

        help_text = attrs.pop("help", f"Old name of the {target.replace('_', '-')} option.")
        return click.option(old, dest, hidden=True, help=help_text, **attrs)(wrapper)  # type: ignore[return-value]

    return deco


def no_progress_option(quiet_alias: bool = False) -> Callable[[F], F]:
    """``--no-progress`` (no progress bars); with ``quiet_alias`` the old ``--quiet`` stays as a hidden alias."""

    def deco(f: F) -> F:
        if quiet_alias:
            f = hidden_alias("--quiet", "no_progress", is_flag=True, help="Old name of --no-progress.")(f)
        return click.option("--no-progress", "no_progress", is_flag=True, help="No progress bars.")(f)

    return deco


__all__ = [
    "ARCH",
    "OUT_DIR",
    "OUT_FILE",
    "ArchType",
    "Batch",
    "Count",
    "Count0",
    "Epochs",
    "ExistingPath",
    "Finite",
    "FiniteFloat",
    "IntList",
    "NonNegativeFloat",
    "NonNegativeInt",
    "OutputPath",
    "PositiveFloat",
    "PositiveInt",
    "PositiveIntList",
    "Probability",
    "Seed",
    "Seq",
    "Threads",
    "UnitInterval",
    "Workers",
    "batch_option",
    "batches_option",
    "data_dir_option",
    "force_option",
    "hidden_alias",
    "json_option",
    "no_progress_option",
    "out_option",
    "seq_option",
    "seqs_option",
    "task_option",
    "threads_option",
]
