"""Latency budgets over one or several latency predictors (lookup tables of different devices).

A candidate is *feasible* only if it meets every budget. Predictions for the whole space are computed once
(spaces hold a few hundred members and ``predict`` is vectorized), so the search looks latencies up for free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import SearchError, SpaceError, TableError
from kdnas_deploy.space import SearchSpace


@dataclass(frozen=True)
class BudgetSpec:
    """One latency budget as the search configuration records it: a latency table (path) and milliseconds."""

    table: str
    budget_ms: float
    name: str = ""
    table_sha256: str = ""


def check_budgets(names: Sequence[str], budget_ms: Sequence[float], error: type[Exception] = SearchError) -> None:
    """The checks every set of budgets passes (the configuration's and the predictors'): at least one,
    each > 0 ms, unique names."""
    if not names:
        raise error("a search needs at least one latency budget (--table/--budget-ms or --budget)")
    for name, ms in zip(names, budget_ms, strict=True):
        if not ms > 0:
            raise error(f"budget {name}: budget_ms must be > 0, got {ms}")
    if len(set(names)) != len(names):
        raise error(f"budget names must be unique, got {list(names)}")


@runtime_checkable
class LatencyPredictor(Protocol):
    """What the search needs from a latency table: its space and vectorized predictions in ms."""

    space: SearchSpace

    def predict(
        self, archs: Sequence[Architecture], batch: int | None = None, seq: int | None = None
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class Budget:
    """``predictor`` must predict at most ``budget_ms`` ms (at ``batch``/``seq``; table default if None)."""

    predictor: LatencyPredictor
    budget_ms: float
    name: str
    batch: int | None = None
    seq: int | None = None

    def predict(self, archs: Sequence[Architecture]) -> np.ndarray:
        kwargs: dict[str, Any] = {}
        if self.batch is not None:
            kwargs["batch"] = self.batch
        if self.seq is not None:
            kwargs["seq"] = self.seq
        return np.asarray(self.predictor.predict(list(archs), **kwargs), dtype=np.float64).reshape(-1)


class BudgetSet:
    """Several budgets over one search space, with the latency of every member precomputed."""

    def __init__(self, budgets: Sequence[Budget], space: SearchSpace | None = None) -> None:
        check_budgets([b.name for b in budgets], [b.budget_ms for b in budgets])
        self.budgets = tuple(budgets)
        self.space = space if space is not None else budgets[0].predictor.space
        for b in budgets:
            other = b.predictor.space
            if other.fingerprint != self.space.fingerprint:
                raise SearchError(
                    f"latency table of budget {b.name!r} was built on space {other.name!r}"
                    f" ({other.fingerprint}), not on the search space"
                    f" {self.space.name!r} ({self.space.fingerprint})"
                )
        self.members: tuple[Architecture, ...] = self.space.members
        self._index = {a: i for i, a in enumerate(self.members)}
        self.matrix = np.stack([b.predict(self.members) for b in budgets], axis=1)  # [members, budgets] ms
        self.budget_ms = np.array([b.budget_ms for b in budgets], dtype=np.float64)
        self._check_reachable()

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.budgets]

    def _check_reachable(self) -> None:
        for j, b in enumerate(self.budgets):
            i = int(np.argmin(self.matrix[:, j]))
            if self.matrix[i, j] > b.budget_ms:
                raise SearchError(
                    f"budget {b.name!r} of {b.budget_ms:g} ms is below the fastest member of space"
                    f" {self.space.name!r}: {self.members[i]} at {self.matrix[i, j]:.3f} ms predicted"
                )
        if not self.feasible_mask().any():
            fastest = ", ".join(
                f"{b.name}: {self.members[int(np.argmin(self.matrix[:, j]))]} at {self.matrix[:, j].min():.3f} ms"
                for j, b in enumerate(self.budgets)
            )
            raise SearchError(
                f"no member of space {self.space.name!r} meets every budget at once (fastest per budget: {fastest})"
            )

    def feasible_mask(self) -> np.ndarray:
        return np.all(self.matrix <= self.budget_ms[None, :], axis=1)

    def latencies(self, archs: Sequence[Architecture]) -> np.ndarray:
        """``[len(archs), n_budgets]`` predicted milliseconds (members looked up, others predicted)."""
        rows = []
        for a in archs:
            i = self._index.get(a)
            if i is None:
                raise SpaceError(f"architecture {a} is outside space {self.space.name!r}")
            rows.append(self.matrix[i])
        return np.array(rows, dtype=np.float64).reshape(len(rows), len(self.budgets))

    def latency_dict(self, arch: Architecture) -> dict[str, float]:
        row = self.latencies([arch])[0]
        return {name: round(float(v), 6) for name, v in zip(self.names, row, strict=True)}

    def feasible(self, arch: Architecture) -> bool:
        return bool(np.all(self.latencies([arch])[0] <= self.budget_ms))

    def predict_any(self, arch: Architecture) -> dict[str, float | None]:
        """Predictions for an architecture maybe outside the space (the teacher): None where it is."""
        out: dict[str, float | None] = {}
        for b in self.budgets:
            try:
                out[b.name] = round(float(b.predict([arch])[0]), 6)
            except SpaceError:
                out[b.name] = None
        return out

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for j, b in enumerate(self.budgets):
            i = int(np.argmin(self.matrix[:, j]))
            out.append(
                {
                    "name": b.name,
                    "budget_ms": b.budget_ms,
                    "device": getattr(b.predictor, "device", None),
                    "precision": getattr(b.predictor, "precision", None),
                    "fastest_arch": self.members[i].to_dict(),
                    "fastest_latency_ms": round(float(self.matrix[i, j]), 6),
                    "feasible_members": int(np.sum(self.matrix[:, j] <= b.budget_ms)),
                }
            )
        return out


# ---------------------------------------------------------------------- loading tables from the CLI
def parse_budget_option(text: str) -> tuple[str, float]:
    """``TABLE.json:MS`` -> (path, ms). The split is on the last colon so paths may contain colons."""
    if ":" not in text:
        raise SearchError(f"--budget {text!r}: expected TABLE.json:MS, e.g. latency_tables/cpu-fp32.json:4.5")
    path, ms = text.rsplit(":", 1)
    try:
        value = float(ms)
    except ValueError:
        raise SearchError(f"--budget {text!r}: {ms!r} is not a number of milliseconds") from None
    if not path:
        raise SearchError(f"--budget {text!r}: the table path is empty")
    return path, value


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_table(path: str | Path) -> Any:
    """Load a latency table (the latency package is imported on first use: it pulls in onnxruntime)."""
    from kdnas_deploy.latency.table import LatencyTable

    if not Path(path).is_file():
        raise TableError(f"latency table not found: {path}")
    return LatencyTable.load(path)


def budget_specs(pairs: Sequence[tuple[str, float]], tables: Sequence[Any]) -> tuple[BudgetSpec, ...]:
    """Budget specs with unique names (``device-precision``, suffixed when two tables share them)."""
    specs: list[BudgetSpec] = []
    seen: dict[str, int] = {}
    for (path, ms), table in zip(pairs, tables, strict=True):
        base = f"{getattr(table, 'device', 'dev')}-{getattr(table, 'precision', 'fp32')}"
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        specs.append(BudgetSpec(table=str(path), budget_ms=float(ms), name=name, table_sha256=file_sha256(path)))
    return tuple(specs)


def apply_headroom(
    pairs: Sequence[tuple[str, float]],
    headroom: float | Sequence[float],
    names: Sequence[str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[tuple[str, float]]:
    """The budgets the search must fit: each budget less its headroom (a share kept free for prediction error
    and machine drift; the deployed model is still checked against the budget itself)."""
    shares = [float(headroom)] * len(pairs) if isinstance(headroom, int | float) else [float(h) for h in headroom]
    out = []
    for i, ((table, budget), share) in enumerate(zip(pairs, shares, strict=True)):
        if not 0 <= share < 1:
            raise SearchError(f"headroom must be in [0, 1), got {share}")
        target = round(budget * (1.0 - share), 4)
        if share and echo is not None:
            name = names[i] if names else table
            echo(f"search target {name}: {budget:.3f} ms less {share:.0%} headroom = {target:.3f} ms")
        out.append((table, target))
    return out


def machine_warnings(tables: Sequence[Any]) -> list[str]:
    """Fingerprint warnings of every table (a table of another machine predicts that machine, by design)."""
    out: list[str] = []
    for t in tables:
        check = getattr(t, "check_machine", None)
        if callable(check):
            out.extend(str(w) for w in check(strict=False))
    return out
