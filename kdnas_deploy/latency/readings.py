"""The records of measuring (policy, jobs, readings, kept values) and the reference-state rule of the probe;
:mod:`kdnas_deploy.latency.measure` takes the readings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.runtime.timing import TimingPolicy

MIN_STATE_PROBES = 10  # probe readings before the reference state may leave the fastest one


def reference_floor(values: Sequence[float], tolerance: float, min_fast_fraction: float) -> float:
    """The floor of the reference state of probe readings ``values``: their minimum, unless fewer than
    ``min_fast_fraction`` of them (and at least MIN_STATE_PROBES readings) lie within ``tolerance`` of it; then
    the minimum of the others (the state the machine is mostly in)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan")
    lo = float(v.min())
    fast = v <= lo * (1.0 + tolerance)
    if v.size < MIN_STATE_PROBES or fast.mean() >= min_fast_fraction:
        return lo
    return float(v[~fast].min())


@dataclass(frozen=True)
class MeasurePolicy:
    rounds: int = 3
    min_accepted: int = 2
    extra_rounds: int = 2
    probe_every: int = 2
    max_spread_pct: float = 50.0
    state_tolerance: float = 0.20
    max_wait_s: float = 90.0  # total time one run may spend waiting for the slow state to pass
    floor_by_tokens: bool = True  # timing.min_seconds x (a shape's tokens / the run's largest shape's tokens)
    min_fast_fraction: float = 0.5  # below this share of probe readings the fast state is not the reference
    timing: TimingPolicy = field(default_factory=TimingPolicy)
    probe_timing: TimingPolicy = field(default_factory=lambda: TimingPolicy(warmup=5, reps=30, min_seconds=0.05))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def quick(cls) -> MeasurePolicy:
        """For tests: few short readings."""
        return cls(rounds=2, min_accepted=1, extra_rounds=1, probe_every=4,
                   timing=TimingPolicy(warmup=1, reps=3, min_seconds=0.0),
                   probe_timing=TimingPolicy(warmup=1, reps=3, min_seconds=0.0))  # fmt: skip


@dataclass
class Reading:
    key: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    reps: int
    round: int
    t: float
    probe_before_ms: float = float("nan")
    probe_after_ms: float = float("nan")

    @property
    def spread_pct(self) -> float:
        return 100.0 * (self.p90_ms - self.p10_ms) / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reading:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Job:
    key: str
    artifact: Path
    batch: int
    seq: int


def by_artifact(jobs: Sequence[Job]) -> list[Job]:
    """``jobs`` with each model's shapes next to each other (models in order of first appearance, the shapes
    of one model in their given order), so that a pass reads a model at all its shapes on one load."""
    first: dict[Path, int] = {}
    for j in jobs:
        first.setdefault(j.artifact, len(first))
    return sorted(jobs, key=lambda j: first[j.artifact])


@dataclass
class Measured:
    """The kept value of one model and how it was obtained."""

    latency_ms: float
    spread_pct: float
    p10_ms: float
    p90_ms: float
    reps: int
    readings_ms: list[float]
    accepted_readings: int
    state: str  # "fast" (kept from readings in the reference state) or "unsettled" (no reading passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": round(self.latency_ms, 5),
            "spread_pct": round(self.spread_pct, 3),
            "p10_ms": round(self.p10_ms, 5),
            "p90_ms": round(self.p90_ms, 5),
            "reps": self.reps,
            "readings_ms": [round(x, 5) for x in self.readings_ms],
            "accepted_readings": self.accepted_readings,
            "state": self.state,
        }
