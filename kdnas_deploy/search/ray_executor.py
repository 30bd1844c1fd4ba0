"""Run the candidates of an episode as Ray tasks (``--executor ray``, extra ``kdnas-deploy[ray]``).

Each :class:`~kdnas_deploy.search.executor.EvalRequest` becomes one Ray task that asks for
``cpus_per_candidate`` CPUs and ``gpus_per_candidate`` GPUs; results come back as they finish and the search
logs them at once. The evaluator is put into the object store once per run (a spec, not loaded data: the
distillation evaluator drops its loaded state when pickled) and every worker process keeps its deserialised
copy, so data is loaded once per worker and the teacher-output cache (a folder that ``prepare()`` created on
the driver) is read by every worker from the same path: on a cluster it must be on a shared filesystem, which
a preflight task on every node checks before the first candidate runs.

Failures: a worker or node lost while a candidate runs is retried by Ray (``max_retries``); an exception
raised by the evaluator is retried by the driver up to ``max_retries`` times (not a :class:`KdnasError`: bad
input fails the same way again). A candidate that still fails is never dropped: the executor drains the other
candidates of the episode (they are logged), then raises a :class:`SearchError` that names it; the run folder
stays resumable (``--resume``). A killed driver loses only its unfinished candidates, which ``--resume``
submits again.

Layout: this module is the driver side; the task bodies that run in Ray workers are in :mod:`.ray_worker`;
options, ``ray.init`` and the resource plan (Ray's public API only) in :mod:`.ray_startup`.

Determinism: a candidate's result depends on its request only (its seed is derived from the search seed and
the architecture), so the log equals the in-process one candidate for candidate. Workers pin torch to
``torch_threads`` threads (default: ``cpus_per_candidate``). The thread count changes float rounding in
training, so ``cpus_per_candidate`` defaults to the threads an in-process run uses (the driver's
``torch.get_num_threads()``, capped at the largest node): by default the log is bit-identical to the
in-process one. With fewer CPUs per candidate more run at once, at the price of other float rounding.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import KdnasError, SearchError
from kdnas_deploy.search.executor import BaseExecutor, EvalRequest, EvalResult, Evaluator
from kdnas_deploy.search.ray_startup import (  # noqa: F401 - in_process_threads: re-exported
    RayOptions,
    first_line,
    in_process_threads,
    init_ray,
    plan_resources,
    quiet_thread_warning,
)
from kdnas_deploy.search.ray_worker import (  # noqa: F401 - BROKEN_WORKER_EXIT_CODE, _pin_threads: re-exported
    BROKEN_WORKER_EXIT_CODE,
    _pin_threads,
    check_paths_on_node,
    evaluate_on_worker,
    warm_worker,
)

# Evaluator attributes holding paths every worker must read (checked on every node before the first task).
SHARED_PATH_ATTRS = ("teacher", "data_dir", "cache_dir")
_first_line = first_line


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class RayExecutor(BaseExecutor):
    """Evaluate the candidates of each episode as Ray tasks (see the module docstring)."""

    name = "ray"
    remote_start = True

    def __init__(
        self,
        address: str | None = None,
        cpus_per_candidate: float | None = None,
        gpus_per_candidate: float | None = None,
        max_retries: int = 2,
        torch_threads: int | None = None,
        check_shared_paths: bool = True,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        try:
            import ray  # noqa: F401 - fail here, before the run folder is touched
        except ModuleNotFoundError:
            raise SearchError("--executor ray needs Ray: pip install 'kdnas-deploy[ray]' (or 'ray>=2.9')") from None
        self.options = RayOptions(
            address=address or None,
            cpus_per_candidate=None if cpus_per_candidate is None else float(cpus_per_candidate),
            gpus_per_candidate=0.0 if gpus_per_candidate is None else float(gpus_per_candidate),
            max_retries=int(max_retries),
            torch_threads=torch_threads,
            check_shared_paths=check_shared_paths,
        )
        self.echo = echo or _stderr
        self.token = uuid.uuid4().hex
        self.attempts: dict[EvalRequest, int] = {}  # submissions per request (for tests and reports)
        self._owns_ray = False
        self._connected = False
        self._checked: set[int] = set()
        self._refs: dict[int, Any] = {}
        self._remote: Any = None
        self._slots = 1
        self._warm_refs: list[Any] = []
        self._shared_warm: Any = None
        self._connecting: threading.Thread | None = None
        self._connect_events = (threading.Event(), threading.Event())  # (connected or failed, may end)
        self._connect_error: BaseException | None = None

    # ------------------------------------------------------------------ connection and preflight
    def begin(self) -> None:
        """Start connecting to (or starting) Ray in a helper thread and return at once.

        Starting a local instance takes about 2 s, mostly spent waiting for Ray's processes to come up. The
        search calls this first (``run_search`` before it loads the task and the teacher; ``SearchRun`` when
        it is built), so that the wait overlaps the driver's own setup and imports. Idempotent; the first
        call that needs Ray waits for the connection and raises its error, if any. The helper thread lives
        until :meth:`close`: Ray's processes are tied to the thread that started them (``PR_SET_PDEATHSIG``
        fires when that thread ends).
        """
        if self._connected or self._connecting is not None:
            return
        ready, release = threading.Event(), threading.Event()

        def connect() -> None:
            try:
                with quiet_thread_warning():
                    self._connect()
            except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits for it
                self._connect_error = exc
                return
            finally:
                ready.set()
            release.wait()

        self._connecting = threading.Thread(target=connect, name="kdnas-ray-connect", daemon=True)
        self._connect_events = (ready, release)
        self._connecting.start()

    def _await_connection(self) -> None:
        """Wait for :meth:`begin`'s connection (raising its error), or connect now if there was none."""
        if self._connecting is not None:
            self._connect_events[0].wait()
            error, self._connect_error = self._connect_error, None
            if error is not None:
                self._end_connect_thread()
                raise error
        self._connect()

    def _end_connect_thread(self) -> None:
        thread, self._connecting = self._connecting, None
        if thread is not None:
            self._connect_events[0].wait()  # a connection still starting finishes first
            self._connect_events[1].set()
            thread.join()
        self._connect_error = None

    def _connect(self) -> None:
        import ray

        if self._connected:
            return
        if init_ray(self.options):
            self._owns_ray = True
        plan = plan_resources(self.options)
        self.options, self._fitting, self._slots = plan.options, plan.fitting, plan.slots
        opts = self.options
        self._remote = ray.remote(evaluate_on_worker).options(
            num_cpus=opts.cpus_per_candidate,
            num_gpus=opts.gpus_per_candidate,
            max_retries=opts.max_retries,
            retry_exceptions=False,
        )
        self.echo(plan.summary)
        self._connected = True

    def _preflight(self, evaluator: Evaluator) -> None:
        """Every other node that can run a candidate must see the evaluator's paths (teacher, data, cache)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if id(evaluator) in self._checked or not self.options.check_shared_paths:
            return
        paths = []
        for attr in SHARED_PATH_ATTRS:
            value = getattr(evaluator, attr, None)
            if isinstance(value, str | Path) and Path(value).exists():
                paths.append(str(Path(value).resolve()))
        here = ray.get_runtime_context().get_node_id()
        nodes = [n for n in self._fitting if n["NodeID"] != here]  # the driver's node sees what it sees
        if paths and nodes:
            check = ray.remote(check_paths_on_node)
            refs = [
                check.options(
                    num_cpus=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                ).remote(paths)
                for n in nodes
            ]
            try:
                reports = ray.get(refs, timeout=120)
            except ray.exceptions.RayError as exc:
                raise SearchError(f"ray: the preflight task failed on a node: {_first_line(exc)}") from None
            for rep in reports:
                if rep["missing"]:
                    raise SearchError(
                        f"ray node {rep['host']} cannot see {', '.join(rep['missing'])}: the teacher, data"
                        " and teacher-output cache (--cache-dir) must be on a filesystem every node mounts"
                        " at the same path"
                    )
        self._checked.add(id(evaluator))

    def _evaluator_ref(self, evaluator: Evaluator) -> Any:
        import ray

        key = id(evaluator)
        if key not in self._refs:
            self._refs[key] = (f"{self.token}-{key}", ray.put(evaluator))
        return self._refs[key]

    # ------------------------------------------------------------------ the executor interface
    def start(self, evaluator: Evaluator | None = None) -> None:  # type: ignore[override]
        """Connect to (or start) Ray and warm one worker per candidate slot without waiting for them.

        The search calls this before its driver-side preparation (data, teacher-output cache), so Ray's
        start-up and the workers' one-time costs (imports, the evaluator's data: :func:`warm_worker`) overlap
        with it instead of delaying the first candidate.
        """
        import ray

        self._await_connection()
        if not self._warm_refs:
            warm = ray.remote(warm_worker).options(
                num_cpus=self.options.cpus_per_candidate, num_gpus=self.options.gpus_per_candidate
            )
            threads = self.options.threads
            if evaluator is None:
                self._warm_refs = [warm.remote(threads) for _ in range(self._slots)]
                return
            # the evaluator's warm-up (shared work such as the teacher-output cache) on one worker, which the
            # first candidates wait for; imports only on the other slots
            token, ev_ref = self._evaluator_ref(evaluator)
            self._shared_warm = warm.remote(threads, token, ev_ref)
            self._warm_refs = [self._shared_warm] + [warm.remote(threads) for _ in range(self._slots - 1)]

    def run(self, evaluator: Evaluator, requests: Sequence[EvalRequest]) -> Iterator[EvalResult]:
        import ray

        if not requests:
            return
        self._await_connection()
        self._preflight(evaluator)
        self._wait_for_shared_warm_up()
        token, ev_ref = self._evaluator_ref(evaluator)
        threads = self.options.threads
        retries = self.options.max_retries
        pending: dict[Any, tuple[EvalRequest, int]] = {}

        def submit(req: EvalRequest, attempt: int) -> None:
            pending[self._remote.remote(token, ev_ref, req, threads)] = (req, attempt)
            self.attempts[req] = self.attempts.get(req, 0) + 1

        for req in requests:
            submit(req, 1)
        failed: list[str] = []
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                req, attempt = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.RayTaskError as exc:  # raised by the evaluator
                    cause = getattr(exc, "cause", None) or exc
                    fatal = isinstance(cause, KdnasError)
                    if not fatal and attempt <= retries:
                        self.echo(
                            f"ray: candidate {req.arch.short()} failed ({_first_line(cause)});"
                            f" retry {attempt}/{retries}"
                        )
                        submit(req, attempt + 1)
                    else:
                        failed.append(f"{req.arch.short()} after {attempt} attempt(s): {_first_line(cause)}")
                    continue
                except ray.exceptions.RayError as exc:  # worker/node lost beyond Ray's own retries
                    failed.append(f"{req.arch.short()} (its worker was lost {retries + 1} time(s)): {_first_line(exc)}")
                    continue
                yield result
        finally:
            # The driver stops early (interrupt, generator closed): free the workers. force=True kills the
            # worker process instead of raising KeyboardInterrupt in it: an interrupt that lands inside
            # ``import torch`` would leave the worker unable to import torch for every later task.
            for ref in pending:
                ray.cancel(ref, force=True)
        if failed:
            raise SearchError(
                f"{len(failed)} candidate(s) of episode {requests[0].episode} could not be evaluated:"
                f" {'; '.join(failed)}. Finished candidates are logged: fix the cause and rerun with --resume"
            )

    def _wait_for_shared_warm_up(self) -> None:
        """Candidates start once the evaluator's warm-up has run, so that none of them repeats its work."""
        import ray

        ref, self._shared_warm = self._shared_warm, None
        if ref is None:
            return
        try:
            ray.get(ref)
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            if isinstance(cause, KdnasError):
                raise cause from None
            raise SearchError(f"ray: warming up the workers failed: {_first_line(cause)}") from None

    def close(self) -> None:
        import ray

        if self._connecting is not None:  # let a connection still starting finish, so that it can be stopped
            self._connect_events[0].wait()

        # Warm-up tasks are not cancelled: they finish within seconds by themselves, and cancelling one
        # in the middle of ``import torch`` would break its worker for later tasks (ray.shutdown below
        # ends them anyway when this executor started Ray).
        self._warm_refs = []
        self._shared_warm = None
        self._refs.clear()
        self._checked.clear()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._end_connect_thread()
        self._owns_ray = False
        self._connected = False


__all__ = ["RayExecutor", "RayOptions", "evaluate_on_worker"]
