"""Timing primitives shared by the profiler, validation and ``bench``: warm up, repeat, keep the median and
the spread. Callers interleave what they compare and time one session at a time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Summary of repeated wall-clock measurements, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    reps: int

    @property
    def spread_pct(self) -> float:
        """Inter-decile range relative to the median, in percent (a robust noise figure)."""
        return 100.0 * (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, float | int]:
        d = asdict(self)
        d["spread_pct"] = round(self.spread_pct, 3)
        return d

    @classmethod
    def from_samples(cls, samples_ms: np.ndarray | list[float]) -> Timing:
        arr = np.asarray(samples_ms, dtype=float)
        if arr.size == 0:
            raise ValueError("no samples")
        p10, med, p90 = np.percentile(arr, [10, 50, 90])
        return cls(float(med), float(p10), float(p90), float(arr.min()), int(arr.size))


def time_callable(
    fn: Callable[[], object],
    warmup: int = 5,
    reps: int = 30,
    min_seconds: float = 0.0,
    max_reps: int = 1000,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then at least ``reps`` times (and for at least ``min_seconds``,
    capped at ``max_reps``) and summarise the per-call wall time."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = clock()
    while len(samples) < reps or (clock() - start < min_seconds and len(samples) < max_reps):
        t0 = clock()
        fn()
        samples.append((clock() - t0) * 1000.0)
    return Timing.from_samples(samples)
