"""The bodies of the Ray executor's tasks, run in Ray worker processes (see :mod:`.ray_executor`): thread
pinning, the worker's cached copy of the run's evaluator, the warm-up and the per-candidate task, and the
preflight that checks shared paths on a node. Imported by Ray workers: keep it light."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from kdnas_deploy.search.executor import EvalRequest, EvalResult, Evaluator

_WORKER_EVALUATORS: dict[str, Any] = {}


BROKEN_WORKER_EXIT_CODE = 75  # the worker exits with this when an earlier import of torch was interrupted


def _pin_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch
    except ImportError:
        return
    except Exception as exc:  # noqa: BLE001 - torch half-imported in this process (an interrupted import)
        # A task interrupted while it imported torch leaves this worker process unable to import it again
        # ("generic_type ... already defined"). Exit: Ray replaces the worker and retries the task.
        print(f"kdnas-deploy: this Ray worker cannot import torch ({exc!r}); exiting so Ray replaces it",
              file=sys.stderr, flush=True)
        os._exit(BROKEN_WORKER_EXIT_CODE)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _worker_evaluator(token: str, evaluator: Evaluator) -> Evaluator:
    """This worker's copy of the run's evaluator: the first one it received for ``token`` (kept with its loaded
    data for the later candidates of the run)."""
    ev = _WORKER_EVALUATORS.get(token)
    if ev is None:
        _WORKER_EVALUATORS.clear()
        _WORKER_EVALUATORS[token] = ev = evaluator
    return ev


def evaluate_on_worker(token: str, evaluator: Evaluator, request: EvalRequest, threads: int) -> EvalResult:
    """The body of a Ray task: evaluate one request with the worker's cached copy of the evaluator."""
    _pin_threads(threads)
    ev = _worker_evaluator(token, evaluator)
    start = time.perf_counter()
    result = ev.evaluate(request)
    if result.seconds <= 0:  # evaluators that do not time themselves (as in LocalExecutor)
        result = replace(result, seconds=time.perf_counter() - start)
    return result


def warm_worker(threads: int, token: str | None = None, evaluator: Evaluator | None = None) -> int:
    """Warm-up task: pay a worker's one-time costs before its first candidate: imports (torch, the
    distillation engine), torch's first optimizer step (which imports ``torch._dynamo``, ~0.9 s here) and,
    given the run's evaluator, its ``warm_up()`` (data, teacher-output cache) on the copy that later
    candidates in this worker use. Returns the worker's pid."""
    _pin_threads(threads)
    import kdnas_deploy.distill.engine  # noqa: F401
    from kdnas_deploy.search.controller import warm_up_training

    warm_up_training()
    if token is not None and evaluator is not None:
        warm_up = getattr(_worker_evaluator(token, evaluator), "warm_up", None)
        if callable(warm_up):
            warm_up()
    return os.getpid()


def check_paths_on_node(paths: Sequence[str]) -> dict[str, Any]:
    """Preflight on one node: which of ``paths`` it cannot see, and whether the package imports there."""
    return {
        "host": socket.gethostname(),
        "missing": [p for p in paths if not os.path.exists(p)],
        "python": sys.version.split()[0],
    }
