"""``devices[].backend: auto``: the fastest backend installed here for a device at its precision.

Every registered backend of the device that prices the precision and can run on this machine (installed, and
for bf16 a CPU with avx512_bf16/AMX) serves the table's probe model; they are timed in interleaved rounds (the
machine drifts between fast and slow states over minutes, so back-to-back blocks of A then B would compare two
machine states) and the lowest median wins. With one usable backend nothing is timed. Why a pick at all: on a
CPU with AMX, OpenVINO bf16 ran the quickstart's student 1.8x faster than ONNX Runtime fp32 (issue 18), while
on this project's Xeon without bf16 the two fp32 paths are within a few percent: which path is fastest is a
property of the machine, measured, not a default.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import DeviceError
from kdnas_deploy.latency.backends import BACKEND_DEVICE, BACKENDS, get_backend
from kdnas_deploy.latency.measure import PROBE_ARCH
from kdnas_deploy.runtime.timing import time_callable

AUTO = "auto"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendPick:
    """The chosen backend, each candidate's median probe latency and why the others could not run here."""

    chosen: str
    precision: str
    medians_ms: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackendPick:
        """The pick as :meth:`to_dict` wrote it (a run's cached ``backend-<device>`` stage)."""
        return cls(data["chosen"], data["precision"], dict(data["medians_ms"]), dict(data["unavailable"]))

    def timed(self) -> str:
        """``cpu-ort 0.410 ms, cpu-openvino 0.520 ms``: the medians, fastest first ("" when nothing was timed)."""
        return ", ".join(f"{n} {ms:.3f} ms" for n, ms in sorted(self.medians_ms.items(), key=lambda kv: kv[1]))

    def line(self) -> str:
        timed = self.timed()
        why = f"probe model {PROBE_ARCH.short()} {timed}" if timed else "the only backend that runs here"
        skipped = "; not available: " + "; ".join(f"{n} ({r})" for n, r in self.unavailable.items())
        return f"backend auto ({self.precision}): picked {self.chosen}: {why}" + (skipped if self.unavailable else "")

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "precision": self.precision, "medians_ms": self.medians_ms,
                "unavailable": self.unavailable, "probe_arch": PROBE_ARCH.short()}  # fmt: skip


def candidates(device: str, precision: str, threads: int) -> tuple[list[str], dict[str, str]]:
    """The backends of ``device`` pricing ``precision`` that run here, and the reasons of those that do not."""
    usable, unavailable = [], {}
    for name, cls in BACKENDS.items():
        if BACKEND_DEVICE[name] != device or precision not in cls.precisions:
            continue
        try:
            get_backend(device, precision, threads=threads, backend=name)
        except DeviceError as exc:
            unavailable[name] = str(exc)
            continue
        usable.append(name)
    return usable, unavailable


def pick_backend(device: str, precision: str, threads: int, batch: int = 1, seq: int = 128, rounds: int = 6,
                 reps: int = 10, time_fn: Callable[[Any], float] | None = None) -> BackendPick:  # fmt: skip
    """The fastest usable backend for ``device`` at ``precision`` (DeviceError when none runs here).
    ``time_fn(runner) -> ms`` replaces the timer (tests)."""
    usable, unavailable = candidates(device, precision, threads)
    if not usable:
        reasons = "; ".join(f"{n}: {r}" for n, r in unavailable.items()) or "none is registered"
        raise DeviceError(f"backend auto: no backend runs {device} at {precision} here ({reasons})")
    if len(usable) == 1:
        return BackendPick(usable[0], precision, {}, unavailable)
    timer = time_fn or (lambda runner: time_callable(runner.fn, warmup=2, reps=reps).median_ms)
    with tempfile.TemporaryDirectory(prefix="kdnas-pick-") as tmp:
        runners = {}
        for name in usable:
            backend = get_backend(device, precision, threads=threads, backend=name)
            runners[name] = backend.open(backend.prepare(PROBE_ARCH, Path(tmp) / name), batch, seq)
        samples: dict[str, list[float]] = {n: [] for n in usable}
        for _ in range(rounds):  # interleaved: every backend sees the same machine states
            for name, runner in runners.items():
                samples[name].append(float(timer(runner)))
        for runner in runners.values():
            runner.close()
    medians = {n: round(statistics.median(v), 4) for n, v in samples.items()}
    chosen = min(medians, key=lambda n: medians[n])
    return BackendPick(chosen, precision, medians, unavailable)
