"""Measuring whole models on a drifting machine: readings spaced in time, a reference probe, state detection.

Shared by ``build``, ``validate`` and ``--recalibrate`` so that table entries and the measurements they are
judged against are taken the same way:

* every reading is warmed up and timed ``reps`` times; its median is kept. Within a pass the readings of one
  model at all its (batch, seq) shapes are taken back to back on one loaded model (``Backend.open_shapes``:
  one ONNX Runtime session, as a server keeps one for every request length); each pass loads it afresh;
* each model gets ``rounds`` readings in separate passes over the whole set (spaced in time, the pass order
  alternates);
* a small fixed *probe* model is timed between every ``probe_every`` models (all of a model's shapes are read
  between the same two probes, so a 3-length build probes as often as a 1-length one). The machine flips between a
  fast and a slow state; a probe reading more than ``state_tolerance`` above the fastest probe reading marks
  the slow state. A reading counts only when the probes on both sides of it are in the fast state and its own
  spread is below ``max_spread_pct``; models left with fewer than ``min_accepted`` such readings are
  re-measured in extra passes. The value kept is the minimum over accepted readings.
* a second, *large* probe is timed at the start of every pass and at the end. The slow state hurts small
  models more than large ones, so re-anchoring uses both probes: a scale per probe, interpolated in
  log-latency between them (:func:`anchor_scales`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.latency.backends import Backend
from kdnas_deploy.runtime.timing import TimingPolicy

PROBE_ARCH = Architecture(2, 128, 4, 512)
LARGE_PROBE_ARCH = Architecture(4, 384, 6, 1536)
PROBE_BATCH, PROBE_SEQ = 1, 128


@dataclass(frozen=True)
class MeasurePolicy:
    rounds: int = 3
    min_accepted: int = 2
    extra_rounds: int = 2
    probe_every: int = 2
    max_spread_pct: float = 50.0
    state_tolerance: float = 0.20
    max_wait_s: float = 90.0  # total time one run may spend waiting for the slow state to pass
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
    state: str  # "fast" (kept from fast-state readings) or "unsettled" (no reading passed)

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


class Measurer:
    """Runs readings of a set of jobs interleaved with the probe (see module doc)."""

    def __init__(
        self,
        backend: Backend,
        probe_artifact: Path,
        policy: MeasurePolicy,
        log: Callable[[str], None] = print,
        on_reading: Callable[[Reading], None] | None = None,
        on_probe: Callable[[float, float, str, float | None], None] | None = None,
        progress: Any = None,
        large_probe_artifact: Path | None = None,
    ) -> None:
        self.backend = backend
        self.probe_artifact = probe_artifact
        self.large_probe_artifact = large_probe_artifact
        self.large: list[tuple[float, float, float]] = []  # (time, ms, small probe just before)
        self.policy = policy
        self.log = log
        self.on_reading = on_reading
        self.on_probe = on_probe
        self.progress = progress
        self.probes: list[tuple[float, float]] = []  # (time, ms)
        self.readings: dict[str, list[Reading]] = {}
        self.state: str | None = None
        self.state_changes = 0
        self.waited_s = 0.0
        self._loaded: tuple[Path, Callable[[int, int], Any]] | None = None  # (artifact, its open_shapes)

    # ------------------------------------------------------------------ probe / state
    @property
    def fast_ms(self) -> float:
        return min(ms for _, ms in self.probes) if self.probes else float("nan")

    def is_fast(self, probe_ms: float) -> bool:
        return bool(probe_ms <= self.fast_ms * (1.0 + self.policy.state_tolerance))

    def add_probe(self, ms: float, t: float | None = None, announce: bool = True) -> None:
        self.probes.append((time.time() if t is None else t, ms))
        state = "fast" if self.is_fast(ms) else "slow"
        if announce and self.state is not None and state != self.state:
            self.state_changes += 1
            self.log(f"machine state changed: {self.state} -> {state} "
                     f"(probe {ms:.3f} ms, fast reference {self.fast_ms:.3f} ms)")  # fmt: skip
        self.state = state

    def measure_probe(self) -> float:
        runner = self.backend.open(self.probe_artifact, PROBE_BATCH, PROBE_SEQ)
        try:
            ms = runner.time(self.policy.probe_timing).median_ms
        finally:
            runner.close()
        t = time.time()
        self.add_probe(ms, t)
        if self.on_probe:
            self.on_probe(t, ms, "small", None)
        return ms

    def measure_large_probe(self) -> None:
        """One reading of the large probe, tagged with a small-probe reading taken just before it."""
        if self.large_probe_artifact is None:
            return
        small = self.measure_probe()
        runner = self.backend.open(self.large_probe_artifact, PROBE_BATCH, PROBE_SEQ)
        try:
            ms = runner.time(self.policy.timing).median_ms
        finally:
            runner.close()
        self.large.append((time.time(), ms, small))
        if self.on_probe:
            self.on_probe(time.time(), ms, "large", small)

    def wait_for_state(self, reference_ms: float, timeout_s: float = 60.0) -> bool:
        """Probe until the machine is in the state a reference probe (e.g. the table's) was measured in.

        Returns True once a probe reading is within ``state_tolerance`` of ``reference_ms``; False after
        ``timeout_s`` (the caller goes on, and the report shows the probe scale).
        """
        limit = reference_ms * (1.0 + self.policy.state_tolerance)
        t_end = time.time() + timeout_s
        while True:
            ms = self.measure_probe()
            if ms <= limit:
                return True
            if time.time() > t_end:
                self.log(f"machine still slower than the table's state after {timeout_s:.0f} s "
                         f"(probe {ms:.3f} ms vs {reference_ms:.3f} ms); measuring anyway")  # fmt: skip
                return False
            time.sleep(1.0)

    # ------------------------------------------------------------------ readings
    def add_prior(self, readings: Sequence[Reading], probes: Sequence[tuple[float, float]],
                  large: Sequence[tuple[float, float, float]] = ()) -> None:  # fmt: skip
        for t, ms in probes:
            self.add_probe(ms, t, announce=False)
        self.large.extend(large)
        for r in readings:
            self.readings.setdefault(r.key, []).append(r)

    def _read(self, job: Job, round_no: int) -> Reading:
        if self._loaded is None or self._loaded[0] != job.artifact:
            self._loaded = None  # the previous model is released first: one model loaded at a time
            self._loaded = (job.artifact, self.backend.open_shapes(job.artifact))
        runner = self._loaded[1](job.batch, job.seq)
        try:
            tm = runner.time(self.policy.timing)
        finally:
            runner.close()
        return Reading(job.key, tm.median_ms, tm.p10_ms, tm.p90_ms, tm.reps, round_no, time.time())

    def _pass(self, jobs: Sequence[Job], round_no: int) -> None:
        try:
            self._pass_grouped(by_artifact(jobs), round_no)
        finally:
            self._loaded = None

    def _pass_grouped(self, jobs: Sequence[Job], round_no: int) -> None:
        if not jobs:
            return
        self.measure_large_probe()
        before = self.measure_probe()
        chunk: list[Reading] = []
        models = 0  # distinct models read in this chunk
        for i, job in enumerate(jobs):
            if not chunk and not self.is_fast(before):
                before = self._wait_while_slow(before)
            models += not chunk or jobs[i - 1].artifact != job.artifact
            chunk.append(self._read(job, round_no))
            if self.progress is not None:
                self.progress.update(1)
            last_of_model = i == len(jobs) - 1 or jobs[i + 1].artifact != job.artifact
            if (models >= self.policy.probe_every and last_of_model) or i == len(jobs) - 1:
                after = self.measure_probe()
                for r in chunk:
                    r.probe_before_ms, r.probe_after_ms = before, after
                    self.readings.setdefault(r.key, []).append(r)
                    if self.on_reading:
                        self.on_reading(r)
                chunk, before, models = [], after, 0

    def _wait_while_slow(self, probe_ms: float) -> float:
        """Readings taken in the slow state are thrown away, so poll the probe (within the run's waiting
        budget) until the fast state is back rather than spend time on them. Returns the last probe."""
        t0 = time.time()
        while not self.is_fast(probe_ms) and self.waited_s < self.policy.max_wait_s:
            time.sleep(0.2)
            probe_ms = self.measure_probe()
            self.waited_s += time.time() - t0
            t0 = time.time()
        return probe_ms

    def accepted(self, key: str) -> list[Reading]:
        out = []
        for r in self.readings.get(key, []):
            probes_ok = self.is_fast(max(r.probe_before_ms, r.probe_after_ms))
            if probes_ok and r.spread_pct <= self.policy.max_spread_pct:
                out.append(r)
        return out

    def run(self, jobs: Sequence[Job]) -> dict[str, Measured]:
        """Measure every job (``rounds`` readings, extra passes for the unsettled) and keep one value each."""
        p = self.policy
        for rnd in range(p.rounds):
            todo = [j for j in jobs if len(self.readings.get(j.key, [])) <= rnd]
            self._pass(todo[::-1] if rnd % 2 else todo, rnd)
        for extra in range(p.extra_rounds):
            need = p.min_accepted if extra == 0 else 1  # later passes only for models with no good reading
            todo = [j for j in jobs if len(self.accepted(j.key)) < need]
            if not todo:
                break
            self.log(f"re-measuring {len(todo)} model(s) with fewer than {need} fast, quiet reading(s)")
            if self.progress is not None:
                self.progress.total = (self.progress.total or 0) + len(todo)
                self.progress.refresh()
            self._pass(todo, p.rounds + extra)
        self.measure_large_probe()
        return {j.key: self.summarise(j.key) for j in jobs}

    def summarise(self, key: str) -> Measured:
        all_r = self.readings[key]
        acc = self.accepted(key)
        pool, state = (acc, "fast") if acc else (all_r, "unsettled")
        best = min(pool, key=lambda r: r.median_ms)
        return Measured(best.median_ms, best.spread_pct, best.p10_ms, best.p90_ms, best.reps,
                        [r.median_ms for r in all_r], len(acc), state)  # fmt: skip

    def probe_summary(self) -> dict[str, Any]:
        """The probe over this window: median of its fast-state readings (what re-anchoring compares)."""
        values = np.array([ms for _, ms in self.probes], dtype=float)
        fast = values[values <= self.fast_ms * (1.0 + self.policy.state_tolerance)]
        return {
            "arch": PROBE_ARCH.to_dict(),
            "batch": PROBE_BATCH,
            "seq": PROBE_SEQ,
            "latency_ms": round(float(np.median(fast)), 5),
            "fast_reference_ms": round(float(self.fast_ms), 5),
            "readings": int(values.size),
            "fast_fraction": round(float(fast.size / values.size), 4),
            "state_changes": self.state_changes,
            "waited_for_fast_state_s": round(self.waited_s, 1),
            "readings_ms": [round(float(v), 5) for v in values],
            **self.large_summary(),
        }

    def large_summary(self) -> dict[str, Any]:
        """The large probe: minimum over its readings taken in the fast state (as for table entries)."""
        if not self.large:
            return {}
        ok = [ms for _, ms, small in self.large if self.is_fast(small)] or [ms for _, ms, _ in self.large]
        return {
            "large": {
                "arch": LARGE_PROBE_ARCH.to_dict(),
                "latency_ms": round(float(min(ok)), 5),
                "readings_ms": [round(float(ms), 5) for _, ms, _ in self.large],
            }
        }


def anchor_scales(pred_ms: np.ndarray, table_probe: dict[str, Any], now_probe: dict[str, Any]) -> np.ndarray:
    """Per-prediction re-anchoring factor from the probes measured at build time and now.

    With one probe: ``now / table``. With the large probe in both: each probe gives a factor, and a model's
    factor is interpolated linearly in log-latency between the two probes' latencies (clamped outside), since
    a change of machine state moves small and large models by different amounts.
    """
    pred_ms = np.asarray(pred_ms, dtype=float)
    small = float(now_probe["latency_ms"]) / float(table_probe["latency_ms"])
    if "large" not in table_probe or "large" not in now_probe:
        return np.full(pred_ms.shape, small)
    t_small, t_large = float(table_probe["latency_ms"]), float(table_probe["large"]["latency_ms"])
    large = float(now_probe["large"]["latency_ms"]) / t_large
    if t_large <= t_small:
        return np.full(pred_ms.shape, small)
    w = np.clip((np.log(np.maximum(pred_ms, 1e-9)) - np.log(t_small)) / (np.log(t_large) - np.log(t_small)), 0, 1)
    return small * (1.0 - w) + large * w
