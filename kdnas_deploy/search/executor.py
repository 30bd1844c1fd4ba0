"""The evaluation interface: the search hands a batch of candidate evaluations of one episode to an executor.

- An :class:`Evaluator` turns one :class:`EvalRequest` into an :class:`EvalResult`. It must be a pure function
  of the request (the request carries the candidate's own seed, derived from the search seed and the
  architecture only), so results do not depend on which worker runs a candidate or in which order. Evaluators
  are plain picklable objects: a distributed executor ships them to workers. ``prepare()`` runs once on the
  driver before the first batch (load data, fill shared caches that workers then only read).
- An :class:`Executor` runs a batch and yields results *as they finish*, in any order. The search logs each
  result the moment it arrives, so a killed search loses no finished evaluation. Register new executors
  (e.g. Ray, issue 8) in :data:`kdnas_deploy.search.executors.EXECUTORS`; ``--executor NAME`` picks one.
- The executor's lifecycle is the :class:`Executor` protocol, with defaults in :class:`BaseExecutor`:
  ``begin()`` once, as soon as the search has validated its inputs (connect to a cluster in the background);
  ``start(evaluator)`` before the evaluator's ``prepare()`` (workers start up while the driver prepares: the
  search overlaps the two when ``remote_start`` is true); ``run`` per episode; ``close()`` exactly once, on
  success and on every error after ``begin()``. :class:`~kdnas_deploy.search.run.SearchRun` is the one place
  that drives it. An evaluator may have a ``warm_up()`` method: one-time work a worker can do before the first
  requests (loading data, filling shared caches), which the Ray executor runs on one worker in that window.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from kdnas_deploy.arch import Architecture


def candidate_seed(search_seed: int, arch: Architecture) -> int:
    """Deterministic per-candidate seed: depends on the search seed and the architecture, nothing else."""
    digest = hashlib.sha256(f"{search_seed}:{arch.short()}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


@dataclass(frozen=True)
class EvalRequest:
    """One candidate evaluation: the architecture, its episode and position in it, and its own seed."""

    arch: Architecture
    episode: int
    index: int
    seed: int
    proxy_scale: float = 1.0  # times the proxy budget (2 when a degenerate search is re-evaluated)


@dataclass(frozen=True)
class EvalResult:
    """What an evaluator measured: score on the held-out slice (task metric), final KD loss, wall seconds."""

    request: EvalRequest
    score: float
    final_loss: float
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Evaluator(Protocol):
    def prepare(self) -> None:
        """Driver-side one-time work before the first batch (idempotent)."""

    def evaluate(self, request: EvalRequest) -> EvalResult:
        """Distill (or otherwise score) ``request.arch``; deterministic given the request."""

    def describe(self) -> dict[str, Any]:
        """A JSON-able description recorded in the run folder."""


@runtime_checkable
class Executor(Protocol):
    remote_start: bool  # True: start() takes seconds (remote workers), so the search overlaps it with prepare()

    def begin(self) -> None:
        """Start connecting (in the background) and return at once; called once, first."""

    def start(self, evaluator: Evaluator) -> None:
        """Start the workers for ``evaluator`` (called before the evaluator's ``prepare()``)."""

    def run(self, evaluator: Evaluator, requests: Sequence[EvalRequest]) -> Iterator[EvalResult]:
        """Evaluate every request; yield each result as soon as it is finished (any order)."""

    def close(self) -> None:
        """Release workers; called once after ``begin()``, whatever happened."""


class BaseExecutor:
    """Defaults of the :class:`Executor` lifecycle: nothing to begin, start or close."""

    name = "base"
    remote_start = False

    def begin(self) -> None:
        pass

    def start(self, evaluator: Evaluator) -> None:
        pass

    def run(self, evaluator: Evaluator, requests: Sequence[EvalRequest]) -> Iterator[EvalResult]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalExecutor(BaseExecutor):
    """Runs candidates one after the other in this process."""

    name = "local"

    def __init__(self, **_: Any) -> None:
        pass

    def run(self, evaluator: Evaluator, requests: Sequence[EvalRequest]) -> Iterator[EvalResult]:
        for req in requests:
            start = time.perf_counter()
            result = evaluator.evaluate(req)
            if result.seconds <= 0:  # evaluators that do not time themselves
                result = EvalResult(
                    req,
                    result.score,
                    result.final_loss,
                    time.perf_counter() - start,
                    result.metrics,
                    result.info,
                )
            yield result
