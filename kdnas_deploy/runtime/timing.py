"""Timing primitives shared by the latency tables, validation, ``export`` and ``bench``: warm up, repeat, keep
the median and the spread (wall clock, or CUDA events for PyTorch on a GPU). Callers interleave what they
compare and time one session at a time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

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


# Idle gap before each block of :func:`interleave`, so the previous model's spinning ONNX Runtime threads go to
# sleep. Measured on the 2-core EPYC (SST-2 teacher 9.5 ms, then its 2.5-ms student, 2 threads each, no warm-up
# calls): after a 20-ms gap the student's first four calls ran 4.1-6.6 ms (the teacher's threads still spinning
# on one of the two cores); after 50, 100 or 150 ms, 2.9-3.0 ms for the first call and 2.53-2.58 from the third
# on. 100 ms doubles the gap that sufficed. Without any gap, ``backend: auto``'s pick timed one ONNX Runtime fp32
# student at 2.3-6.3 ms in consecutive passes where OpenVINO's held 1.85-1.95 ms
# (L=2,H=384,A=4,F=768 in tools/results/backend_pick_nogap.json).
PAUSE_MS = 100.0


def interleave(
    fns: Sequence[Callable[[], object]],
    rounds: int,
    block: int,
    warmup: int = 5,
    pause_ms: float = PAUSE_MS,
    block_warmup: int = 2,
    progress: bool = False,
) -> list[list[float]]:
    """Time ``fns`` interleaved: each warmed up once alone, then ``rounds`` rounds of an idle gap of
    ``pause_ms``, ``block_warmup`` untimed calls (waking its threads, bringing its weights back into cache after
    the others ran) and ``block`` timed calls each, so slow drifts of the machine hit every model alike. Samples
    in ms, in time order, one list per function."""
    from tqdm.auto import tqdm

    for fn in fns:
        time_callable(fn, warmup=warmup, reps=1)
    samples: list[list[float]] = [[] for _ in fns]
    for _ in tqdm(range(rounds), desc="bench rounds", disable=not progress, unit="round"):
        for fn, out in zip(fns, samples, strict=True):
            time.sleep(pause_ms / 1000.0)
            for _ in range(block_warmup):
                fn()
            out.extend(time_callable(fn, warmup=0, reps=1).median_ms for _ in range(block))
    return samples


@dataclass(frozen=True)
class TimingPolicy:
    """Warm-up and repetitions of one reading."""

    warmup: int = 5
    reps: int = 20
    min_seconds: float = 0.15
    max_reps: int = 400

    def to_dict(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "reps": self.reps, "min_seconds": self.min_seconds, "max_reps": self.max_reps}


def time_cuda_events(fn: Callable[[], object], warmup: int = 10, reps: int = 20, min_seconds: float = 0.0,
                     max_reps: int = 1000) -> Timing:  # fmt: skip
    """Like :func:`time_callable`, each call timed on the GPU with a pair of CUDA events (inside one
    ``torch.inference_mode``): what PyTorch-served models are timed with."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        while len(samples) < reps or (time.perf_counter() - t0 < min_seconds and len(samples) < max_reps):
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(float(start.elapsed_time(end)))
    return Timing.from_samples(samples)
