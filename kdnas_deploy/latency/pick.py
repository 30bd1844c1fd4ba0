"""``devices[].backend: auto``: the fastest backend installed here for a device at its precision.

Every registered backend of the device that prices the precision and can run on this machine (installed, and
for bf16 a CPU with avx512_bf16/AMX) serves the tables' two probe models, the small one and the student-sized one
(:data:`PICK_ARCHS`); they are timed in interleaved rounds (the machine drifts between fast and slow states over
minutes, so back-to-back blocks of A then B would compare two machine states) and the lowest geometric mean of
the per-model medians wins. With one usable backend nothing is timed. Why a pick at all: on a CPU with AMX,
OpenVINO bf16 ran the quickstart's student 1.8x faster than ONNX Runtime fp32 (issue 18), while on this
project's Xeon without bf16 the two fp32 paths are within a few percent: which path is fastest is a property of
the machine, measured, not a default. Why two models: the small probe alone (L=2,H=128) is dominated by per-call
cost. On the AMD EPYC family 26 at fp32 it put ONNX Runtime 1.07x behind OpenVINO (median of 12 passes) where the
shipped students were 1.18x behind, and the two models 1.12x; timed without the bench's idle gap, the small probe
picked ONNX Runtime in 12 of 12 passes (``tools/results/backend_pick.json``, ``backend_pick_nogap.json``).
"""

from __future__ import annotations

import logging
import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import DeviceError
from kdnas_deploy.latency.backends import BACKEND_DEVICE, BACKENDS, get_backend
from kdnas_deploy.latency.measure import LARGE_PROBE_ARCH, PROBE_ARCH
from kdnas_deploy.runtime.timing import interleave

AUTO = "auto"
PICK_ARCHS: tuple[Architecture, ...] = (PROBE_ARCH, LARGE_PROBE_ARCH)
PICK_BLOCK = 10  # timed calls per runner and round
# ``sample(fns, rounds) -> one list of ms per fn``: the timer (runtime.timing.interleave; tests pass a fake)
Sampler = Callable[[list[Callable[[], object]], int], list[list[float]]]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendPick:
    """The chosen backend, each candidate's score (the geometric mean of its per-model medians), the per-model
    medians and why the others could not run here."""

    chosen: str
    precision: str
    medians_ms: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    per_model_ms: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackendPick:
        """The pick as :meth:`to_dict` wrote it (a run's cached ``backend-<device>`` stage; stages written before
        the pick timed two models have only ``probe_arch`` and its medians)."""
        per_model = {k: dict(v) for k, v in data.get("per_model_ms", {}).items()}
        if not per_model and data["medians_ms"] and "probe_arch" in data:
            per_model = {data["probe_arch"]: dict(data["medians_ms"])}
        return cls(data["chosen"], data["precision"], dict(data["medians_ms"]), dict(data["unavailable"]), per_model)

    def timed(self) -> str:
        """``cpu-ort 0.410 ms, cpu-openvino 0.520 ms``: the scores, fastest first ("" when nothing was timed)."""
        return ", ".join(f"{n} {ms:.3f} ms" for n, ms in sorted(self.medians_ms.items(), key=lambda kv: kv[1]))

    def basis(self) -> str:
        """What the scores are: one probe model's medians, or the geometric mean over several."""
        models = list(self.per_model_ms) or [PROBE_ARCH.short()]
        if len(models) == 1:
            return f"probe model {models[0]}"
        return "geometric mean of the medians on " + " and ".join(models)

    def line(self) -> str:
        timed = self.timed()
        why = f"{self.basis()}: {timed}" if timed else "the only backend that runs here"
        skipped = "; not available: " + "; ".join(f"{n} ({r})" for n, r in self.unavailable.items())
        return f"backend auto ({self.precision}): picked {self.chosen}: {why}" + (skipped if self.unavailable else "")

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "precision": self.precision, "medians_ms": self.medians_ms,
                "unavailable": self.unavailable, "per_model_ms": self.per_model_ms}  # fmt: skip


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
                 sample: Sampler | None = None,
                 archs: tuple[Architecture, ...] = PICK_ARCHS) -> BackendPick:  # fmt: skip
    """The fastest usable backend for ``device`` at ``precision`` (DeviceError when none runs here): the lowest
    geometric mean over ``archs`` of the medians of ``rounds`` interleaved rounds. ``sample`` replaces the timer
    (tests)."""
    usable, unavailable = candidates(device, precision, threads)
    if not usable:
        reasons = "; ".join(f"{n}: {r}" for n, r in unavailable.items()) or "none is registered"
        raise DeviceError(f"backend auto: no backend runs {device} at {precision} here ({reasons})")
    if len(usable) == 1:
        return BackendPick(usable[0], precision, {}, unavailable)
    with tempfile.TemporaryDirectory(prefix="kdnas-pick-") as tmp:
        runners: dict[tuple[str, str], Any] = {}
        try:
            open_runners(runners, device, precision, threads, usable, archs, Path(tmp), batch, seq)
            per_model = time_interleaved(runners, rounds, sample)
        finally:
            for runner in runners.values():
                runner.close()
    chosen, scores = choose(per_model)
    return BackendPick(chosen, precision, scores, unavailable, per_model)


def open_runners(runners: dict[tuple[str, str], Any], device: str, precision: str, threads: int, usable: list[str],
                 archs: tuple[Architecture, ...], workdir: Path, batch: int = 1, seq: int = 128) -> None:  # fmt: skip
    """Fill ``runners`` with one runner per ``(model, backend)``, a model's backends next to each other (timed
    in the same machine state); filled in place so the caller closes what opened before a failure."""
    backends = {name: get_backend(device, precision, threads=threads, backend=name) for name in usable}
    for i, arch in enumerate(archs):
        for name, backend in backends.items():
            runners[(arch.short(), name)] = backend.open(backend.prepare(arch, workdir / f"{name}-{i}"), batch, seq)


def time_interleaved(runners: dict[tuple[str, str], Any], rounds: int,
                     sample: Sampler | None = None) -> dict[str, dict[str, float]]:  # fmt: skip
    """``{model: {backend: median ms}}`` of ``rounds`` rounds of :func:`~kdnas_deploy.runtime.timing.interleave`
    (an idle gap, untimed calls, then a block of :data:`PICK_BLOCK` timed calls per runner), the bench's own
    timer: without its gap, ONNX Runtime's spinning threads slowed whichever model came next."""
    sample = sample or (lambda fns, n: interleave(fns, n, PICK_BLOCK, warmup=2))
    keys = list(runners)
    samples = sample([runners[k].fn for k in keys], rounds)
    per_model: dict[str, dict[str, float]] = {}
    for (model, name), values in zip(keys, samples, strict=True):
        per_model.setdefault(model, {})[name] = round(statistics.median(values), 4)
    return per_model


def choose(per_model: dict[str, dict[str, float]]) -> tuple[str, dict[str, float]]:
    """The backend with the lowest geometric mean of its per-model medians, and every backend's mean."""
    names = next(iter(per_model.values()))
    scores = {n: round(math.exp(statistics.fmean(math.log(per_model[m][n]) for m in per_model)), 4) for n in names}
    return min(scores, key=lambda n: scores[n]), scores
