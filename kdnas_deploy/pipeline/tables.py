"""Which latency table ``run`` uses for a device: a shipped or cached table whose fingerprint matches, else
one it builds and keeps in the table cache, where later runs find it through the same match.

Candidates, in order: ``$KDNAS_TABLE_DIRS`` (``os.pathsep``-separated), ``./latency_tables``, the checkout's
``latency_tables/``, then the table cache: ``$KDNAS_CACHE_DIR/tables``, else the platform's user cache folder
(``platformdirs.user_cache_dir("kdnas-deploy")``, when platformdirs is installed), else
``~/.cache/kdnas-deploy/tables`` (the layout Hugging Face uses for its caches).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.runtime.deploy import DEFAULT_INT8_SCHEME, int8_scheme_of
from kdnas_deploy.space import SearchSpace

TABLE_DIRS_ENV = "KDNAS_TABLE_DIRS"
CACHE_DIR_ENV = "KDNAS_CACHE_DIR"
APP_NAME = "kdnas-deploy"


def cache_dir() -> Path:
    """The kdnas-deploy cache folder (see the module docstring); not created here."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        return Path.home() / ".cache" / APP_NAME
    return Path(user_cache_dir(APP_NAME))


def table_cache_dir() -> Path:
    return cache_dir() / "tables"


def table_search_dirs(include_cache: bool = True) -> list[Path]:
    """Existing folders searched for a reusable table, in order (the table cache last)."""
    dirs = [Path(p) for p in os.environ.get(TABLE_DIRS_ENV, "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "latency_tables")
    dirs.append(Path(__file__).resolve().parents[2] / "latency_tables")
    if include_cache:
        dirs.append(table_cache_dir())
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.append(d.resolve())
    return seen


@dataclass(frozen=True)
class TableRequirement:
    """What a table must hold to serve one device of a run."""

    space: SearchSpace
    device: str
    precision: str
    threads: int
    batch: int
    seq: int
    optimize: str
    backend: str | None = None  # None: the device's default backend

    @property
    def backend_name(self) -> str:
        from kdnas_deploy.latency.backends import resolve_backend_name

        return resolve_backend_name(self.device, self.backend)


@dataclass(frozen=True)
class Candidate:
    """One table a run would consider, and why it cannot serve (empty ``why``: it matches)."""

    path: Path
    why: tuple[str, ...]

    @property
    def matches(self) -> bool:
        return not self.why


def table_mismatches(table: Any, need: TableRequirement) -> list[str]:
    """Why ``table`` cannot serve ``need`` (empty when it can), machine fingerprint included."""
    why = []
    if table.space.fingerprint != need.space.fingerprint:
        why.append(f"space {table.space.name!r} differs")
    if table.device != need.device or table.precision != need.precision:
        why.append(f"{table.device}/{table.precision} != {need.device}/{need.precision}")
    backend = getattr(table, "backend", need.backend_name)
    if backend != need.backend_name:
        why.append(f"backend {backend} != {need.backend_name}")
    if table.threads is not None and table.threads != need.threads:
        why.append(f"threads {table.threads} != {need.threads}")
    if need.batch not in table.batch_sizes or not (min(table.seq_lens) <= need.seq <= max(table.seq_lens)):
        why.append(f"grid does not cover batch {need.batch}, seq {need.seq}")
    deploy = table.fingerprint.get("deploy_config", {})
    if deploy.get("optimize", need.optimize) != need.optimize:
        why.append(f"optimization level {deploy.get('optimize')} != {need.optimize}")
    scheme = int8_scheme_of(deploy)  # an ONNX Runtime int8 table's (OpenVINO's int8 is NNCF's, recorded elsewhere)
    if scheme is not None and scheme != DEFAULT_INT8_SCHEME:  # it prices another int8 graph than export makes
        why.append(f"int8 scheme {scheme} != {DEFAULT_INT8_SCHEME} (the export's)")
    why += table.check_machine()
    return why


def list_candidate_tables(need: TableRequirement, dirs: Iterable[Path] | None = None) -> list[Candidate]:
    """Every table in ``dirs`` (default :func:`table_search_dirs`) and why each matches ``need`` or not."""
    from kdnas_deploy.errors import KdnasError
    from kdnas_deploy.latency.table import LatencyTable

    here_id = _cpu_id() if need.device == "cpu" else None
    out = []
    for d in table_search_dirs() if dirs is None else dirs:
        ranked: list[tuple[int, Candidate]] = []
        for path in sorted(Path(d).glob("*.json")):
            if path.name.endswith(".validation.json"):
                continue
            try:
                table = LatencyTable.load(path)
            except KdnasError as exc:
                ranked.append((1, Candidate(path, (f"not a latency table ({str(exc).splitlines()[0]})",))))
                continue
            exact = here_id is not None and table.fingerprint.get("cpu_id") == here_id
            ranked.append((0 if exact else 1, Candidate(path, tuple(table_mismatches(table, need)))))
        # a table that names this CPU's family and model comes before one that only shares its model string and
        # flags (tables built before ``cpu_id`` was recorded): "AMD EPYC" with the same flags is several CPUs
        out += [c for _, c in sorted(ranked, key=lambda rc: rc[0])]
    return out


def _cpu_id() -> str | None:
    from kdnas_deploy.latency.fingerprint import cpu_fingerprint

    return cpu_fingerprint().get("cpu_id")


def find_table(need: TableRequirement, dirs: Iterable[Path] | None = None) -> Path | None:
    """The first matching table (see :func:`list_candidate_tables`), or None."""
    for cand in list_candidate_tables(need, dirs):
        if cand.matches:
            return cand.path
    return None


def no_match_line(candidates: list[Candidate], need: TableRequirement) -> str:
    """The line ``run`` prints before it builds a table: the closest shipped table's difference."""
    machine = [c for c in candidates if c.why and all(_is_machine(w) for w in c.why)]
    if machine:
        detail = f" ({_difference(machine[0].why[0])})"
    elif candidates:
        detail = f" (closest: {candidates[0].path.name}: {candidates[0].why[0]})"
    else:
        detail = ""
    return f"no shipped table matches this machine{detail}; building one (~4 min)"


def transfer_reference(candidates: list[Candidate]) -> Candidate | None:
    """The first table that serves the run in everything but the machine (its thread count included): one
    :func:`kdnas_deploy.latency.transfer.transfer_table` can transfer to this machine; None if there is none."""
    for cand in candidates:
        if cand.why and all(_is_transferable(w) for w in cand.why):
            return cand
    return None


def transfer_line(ref: Candidate, k: int) -> str:
    """The one line ``run`` prints before it transfers ``ref`` instead of building a table."""
    return (f"no table matches this machine ({_difference(ref.why[0])}); transferring {ref.path.name} "
            f"from {k} measured models (~1 min)")  # fmt: skip


def _difference(reason: str) -> str:
    """``cpu_model 'here' vs 'table'`` from a mismatch reason (the reason itself when it has another form)."""
    key, _, rest = reason.partition(": table has ")
    table_value, _, here = rest.partition(", this machine has ")
    if here:
        return f"{key} {here} vs {table_value}"
    m = _THREADS.match(reason)
    return f"threads {m.group(2)} vs {m.group(1)}" if m else reason


_THREADS = re.compile(r"threads (\d+) != (\d+)$")  # table_mismatches: "threads TABLE != NEEDED"


def _is_machine(reason: str) -> bool:
    return ": table has " in reason or reason.startswith(("threads: table used", "execution_provider:"))


def _is_transferable(reason: str) -> bool:
    """A difference transfer overcomes: the machine's fingerprint or the thread count, not the provider."""
    return (_is_machine(reason) and not reason.startswith("execution_provider:")) or bool(_THREADS.match(reason))


def keep_in_cache(built: Path, name: str) -> Path | None:
    """Copy a table ``run`` built (and its validation report) into the table cache; None if that fails."""
    target_dir = table_cache_dir()
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / name
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(built, tmp)
        tmp.replace(target)
        report = built.with_name(built.stem + ".validation.json")
        if report.is_file():
            shutil.copyfile(report, target.with_name(target.stem + ".validation.json"))
    except OSError:
        return None
    return target


def predictions_for(table: str, paths: list[str], batch: int, seq: int) -> list[float | None]:
    """The table's unanchored predictions for ONNX folders (None for a model outside the table's space)."""
    from kdnas_deploy.latency.table import LatencyTable

    t = LatencyTable.load(table)
    out: list[float | None] = []
    for p in paths:
        arch = arch_of(p)
        out.append(round(float(t.predict_one(arch, batch=batch, seq=seq)), 4) if arch in t.space else None)
    return out


def arch_of(model_dir: str) -> Architecture:
    from transformers import AutoConfig

    return Architecture.from_config(AutoConfig.from_pretrained(model_dir))


def device_inputs(dev: Any) -> dict[str, Any]:
    """A device's stage inputs; ``backend`` only when set (run folders of configs without it keep their keys)."""
    return {k: v for k, v in dev.__dict__.items() if k != "backend" or v is not None}


def table_file_prefix(dev: Any) -> str:
    """The table cache's file-name prefix: the device, or the backend when it is not the device's default."""
    return dev.backend_name if dev.backend else dev.device


def check_device_backend(dev: Any) -> None:
    """DeviceError (one line) when a device's backend cannot run here: not installed, or a precision this
    CPU lacks (bf16 without avx512_bf16/AMX); checked before the run writes anything."""
    from kdnas_deploy.errors import DeviceError
    from kdnas_deploy.latency.backends import BACKENDS

    if dev.backend is None:
        return  # the device's default backend: checked where it is used, as before
    if dev.backend == "auto":
        from kdnas_deploy.latency.pick import candidates

        usable, unavailable = candidates(dev.device, dev.precision, dev.threads)
        if not usable:
            reasons = "; ".join(f"{n}: {r}" for n, r in unavailable.items())
            raise DeviceError(f"devices[{dev.name!r}]: backend auto: no backend runs {dev.device} at "
                              f"{dev.precision} here ({reasons})")  # fmt: skip
        return
    try:
        BACKENDS[dev.backend_name](precision=dev.precision, threads=dev.threads).check_available()
    except DeviceError as exc:
        raise DeviceError(f"devices[{dev.name!r}]: {exc}") from None
