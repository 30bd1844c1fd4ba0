"""The evaluation interface: the search hands a batch of candidate evaluations of one episode to an executor.

- An :class:`Evaluator` turns one :class:`EvalRequest` into an :class:`EvalResult`. It must be a pure function
  of the request (the request carries the candidate's own seed, derived from the search seed and the
  architecture only), so results do not depend on which worker runs a candidate or in which order. Evaluators
  are plain picklable objects: a distributed executor ships them to workers. ``prepare()`` runs once on the
  driver before the first batch (load data, fill shared caches that workers then only read).
- An :class:`Executor` runs a batch and yields results *as they finish*, in any order. The search logs each
  result the moment it arrives, so a killed search loses no finished evaluation. Register new executors
  (e.g. Ray, issue 8) in :data:`EXECUTORS`; ``--executor NAME`` picks one. An executor may also have a
  ``begin()`` method, called as soon as the search has it (connect to a cluster in the background), and a
  ``start(evaluator)`` method: the search calls it before the evaluator's ``prepare()``, so that workers start
  up while the driver prepares. An evaluator may have a ``warm_up()`` method: one-time work a worker can do
  before the first requests (loading data, filling shared caches), which the Ray executor runs on one worker
  in that start-up window.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
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
    def run(self, evaluator: Evaluator, requests: Sequence[EvalRequest]) -> Iterator[EvalResult]:
        """Evaluate every request; yield each result as soon as it is finished (any order)."""

    def close(self) -> None:
        """Release workers (no-op for the local executor)."""


class LocalExecutor:
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

    def close(self) -> None:
        pass


# executor name -> factory(**options), or "module:attribute" of one (imported on first use, so optional
# engines cost nothing until picked). Options such as a cluster address are passed through.
EXECUTORS: dict[str, Callable[..., Executor] | str] = {
    "local": LocalExecutor,
    "ray": "kdnas_deploy.search.ray_executor:RayExecutor",
}


def begin_executor(executor: Any) -> None:
    """Call the executor's optional ``begin()`` hook (start connecting to a cluster in the background)."""
    begin = getattr(executor, "begin", None)
    if callable(begin):
        begin()


def register_executor(name: str, factory: Callable[..., Executor] | str) -> None:
    EXECUTORS[name] = factory


def make_executor(name: str, **options: Any) -> Executor:
    import importlib

    from kdnas_deploy.errors import SearchError

    if name not in EXECUTORS:
        raise SearchError(f"unknown executor {name!r} (available: {', '.join(EXECUTORS)})")
    factory = EXECUTORS[name]
    if isinstance(factory, str):
        module_name, attr = factory.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except ModuleNotFoundError as exc:
            raise SearchError(f"executor {name!r} is not available here ({exc.name} is not installed)") from None
    return factory(**options)
