"""Measuring whole models on a drifting machine: readings spaced in time, a reference probe, state detection.

Shared by ``build``, ``validate`` and ``--recalibrate`` so that table entries and the measurements they are
judged against are taken the same way:

* every reading is warmed up and timed ``reps`` times (and for at least ``min_seconds``); its median is kept.
  With ``floor_by_tokens`` a shape's ``min_seconds`` is scaled by its tokens (batch x seq) over the largest
  shape of the run: the floor stands for a number of calls, and a 32-token call costs 0.29 of a 128-token one
  (median over the shipped 3-length table), so each length of a grid gets about as many calls as the longest
  rather than as many seconds. A 3-length build spent 3x a single length's reading time (2.02-2.46x its wall
  time on two Xeons); with the scaled floor it took 1.72x on the EPYC family 26, where the old floor's readings
  would have made it about 1.98x (``tools/results/seq_bench.json``).
* within a pass the readings of one model at all its (batch, seq) shapes are taken back to back on one loaded
  model (``Backend.open_shapes``: one ONNX Runtime session, as a server keeps one for every request length);
  each pass loads it afresh;
* each model gets ``rounds`` readings in separate passes over the whole set (spaced in time, the pass order
  alternates);
* a small fixed *probe* model is timed between every ``probe_every`` models (all of a model's shapes are read
  between the same two probes, so a 3-length build probes as often as a 1-length one). The machine flips between a
  fast and a slow state; a probe reading more than ``state_tolerance`` above the fastest probe reading marks
  the slow state. A reading counts only when the probes on both sides of it are in the *reference* state and its
  own spread is below ``max_spread_pct``; models left with fewer than ``min_accepted`` such readings are
  re-measured in extra passes. The value kept is the minimum over accepted readings.
* the reference state is the fast one, unless the machine spends less than ``min_fast_fraction`` (half) of its
  probe readings there (once it has ``MIN_STATE_PROBES``): then it is the state the machine is mostly in, whose
  floor is the fastest of the other readings, and readings taken in the fast state are not accepted either: the
  state with the most probe readings leaves the fewest entries without an accepted reading. Why: on
  the AMD EPYC family 26 of 2026-12-07 the probe read 0.41 ms in 1.3% of 531 readings and 0.58-0.59 ms in the
  rest; a build against the fast state kept 88 of 96 entries "unsettled" (slow-state minima) and 8 fast ones,
  ~30% apart, under a probe figure (0.41 ms) that described none of the 88, so re-anchoring against it would
  have scaled them by 1.4x. Measuring in the state the machine is in keeps entries, probe figure and the held-out
  models of ``validate`` consistent (the same build with a 25% threshold: 166 s, every entry settled, 100% of 100
  held-out models within 10%); re-anchoring (:mod:`kdnas_deploy.latency.anchor`) moves a table between states.
  A quarter, tried first, sat on this machine's own share (24-26%) and flipped the reference back and forth.
* a second, *large* probe is timed at the start of every pass and at the end. The slow state hurts small
  models more than large ones, so re-anchoring uses both probes: a scale per probe, interpolated in
  log-latency between them (:func:`kdnas_deploy.latency.anchor.anchor_scales`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.latency.backends import Backend
from kdnas_deploy.latency.readings import Job, Measured, MeasurePolicy, Reading, by_artifact, reference_floor
from kdnas_deploy.runtime.timing import TimingPolicy

PROBE_ARCH = Architecture(2, 128, 4, 512)
LARGE_PROBE_ARCH = Architecture(4, 384, 6, 1536)
PROBE_BATCH, PROBE_SEQ = 1, 128
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
        self._max_tokens = 0  # batch x seq of the largest shape of the run (floor_by_tokens)
        self._reference: tuple[int, float] = (-1, float("nan"))  # (probe readings it was computed on, floor)

    # ------------------------------------------------------------------ probe / state
    @property
    def fast_ms(self) -> float:
        """The fastest probe reading so far."""
        return min(ms for _, ms in self.probes) if self.probes else float("nan")

    @property
    def reference_ms(self) -> float:
        """The floor of the reference state (the module doc): the fastest probe reading unless that state is rare."""
        if self._reference[0] != len(self.probes):
            values = [ms for _, ms in self.probes]
            p = self.policy
            self._reference = (len(values), reference_floor(values, p.state_tolerance, p.min_fast_fraction))
        return self._reference[1]

    @property
    def reference_state(self) -> str:
        """``fast`` (the fastest probe state) or ``dominant`` (the state the machine is mostly in)."""
        return "fast" if not self.probes or self.reference_ms == self.fast_ms else "dominant"

    def is_fast(self, probe_ms: float) -> bool:
        """Whether a probe reading lies in the reference state ("fast" in readings' and entries' labels)."""
        ref, tol = self.reference_ms, self.policy.state_tolerance
        return bool(ref / (1.0 + tol) <= probe_ms <= ref * (1.0 + tol))

    def add_probe(self, ms: float, t: float | None = None, announce: bool = True) -> None:
        before = self.reference_state
        self.probes.append((time.time() if t is None else t, ms))
        if announce and self.reference_state != before:
            share = float(np.mean([p <= self.fast_ms * (1.0 + self.policy.state_tolerance) for _, p in self.probes]))
            self.log(f"reference state: {self.reference_state} (the fastest probe state, {self.fast_ms:.3f} ms, "
                     f"holds {share:.0%} of {len(self.probes)} probe readings; reference {self.reference_ms:.3f} ms)")
        state = "fast" if self.is_fast(ms) else "slow"
        if announce and self.state is not None and state != self.state:
            self.state_changes += 1
            where = "back in" if state == "fast" else "out of"
            self.log(f"machine state changed: {where} the reference state "
                     f"(probe {ms:.3f} ms, reference {self.reference_ms:.3f} ms)")  # fmt: skip
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
            tm = runner.time(self.timing_for(job))
        finally:
            runner.close()
        return Reading(job.key, tm.median_ms, tm.p10_ms, tm.p90_ms, tm.reps, round_no, time.time())

    def timing_for(self, job: Job) -> TimingPolicy:
        """The timing of one reading: the policy's, its time floor scaled by the job's share of the largest
        shape's tokens when ``floor_by_tokens`` (the same floor for a one-shape run)."""
        timing = self.policy.timing
        tokens = job.batch * job.seq
        if not self.policy.floor_by_tokens or tokens >= self._max_tokens:
            return timing
        return replace(timing, min_seconds=timing.min_seconds * tokens / self._max_tokens)

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
            probes_ok = self.is_fast(r.probe_before_ms) and self.is_fast(r.probe_after_ms)
            if probes_ok and r.spread_pct <= self.policy.max_spread_pct:
                out.append(r)
        return out

    def run(self, jobs: Sequence[Job]) -> dict[str, Measured]:
        """Measure every job (``rounds`` readings, extra passes for the unsettled) and keep one value each."""
        p = self.policy
        self._max_tokens = max((j.batch * j.seq for j in jobs), default=0)
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
        """The probe over this window: median of its reference-state readings, and that state's floor
        (``fast_reference_ms``, what re-anchoring compares)."""
        values = np.array([ms for _, ms in self.probes], dtype=float)
        tol = self.policy.state_tolerance
        in_state = values[[self.is_fast(v) for v in values]]
        fast = values[values <= self.fast_ms * (1.0 + tol)]
        return {
            "arch": PROBE_ARCH.to_dict(),
            "batch": PROBE_BATCH,
            "seq": PROBE_SEQ,
            "latency_ms": round(float(np.median(in_state)), 5),
            "fast_reference_ms": round(float(self.reference_ms), 5),
            "reference_state": self.reference_state,
            "fastest_ms": round(float(self.fast_ms), 5),
            "state_tolerance": tol,
            "readings": int(values.size),
            "fast_fraction": round(float(fast.size / values.size), 4),
            "reference_fraction": round(float(in_state.size / values.size), 4),
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
