"""Starting Ray for the search through Ray's public API only: options, the connection, the resource plan.

Measured cost of staying on the public API (Ray 2.60, 2-core machine, ``tmp`` script in the review of issue
21.7): a local ``ray.init`` took 2.7 s against 2.4 s with the former patch of Ray's private node lookup, and
``ray.shutdown`` 1.4 s against 0.1-0.4 s with the former kill of the autoscaler monitor through Ray's private
node handle (Ray waits up to 1 s for the idle monitor to exit). The search hides most of both: ``ray.init``
runs in a helper thread while the driver loads the task and the teacher (:meth:`RayExecutor.begin`), and
``ray.shutdown`` runs while the results are written. On a search of minutes either is noise, and neither
breaks with the next Ray release.

The helper thread that ran ``ray.init`` lives until the executor closes: Ray ties the processes it starts to
the thread that started them (``PR_SET_PDEATHSIG`` fires when that thread ends), a finding kept from the
former implementation; it costs one idle thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from kdnas_deploy.errors import ConfigError, SearchError


@dataclass(frozen=True)
class RayOptions:
    """Where and with what resources candidates run."""

    address: str | None = None  # None: RAY_ADDRESS, else a new local instance; "auto": this node's cluster
    cpus_per_candidate: float | None = None  # None: the in-process torch threads (capped at the largest node)
    gpus_per_candidate: float = 0.0
    max_retries: int = 2  # per candidate: Ray retries for lost workers, driver retries for raised errors
    torch_threads: int | None = None  # None: max(1, int(cpus_per_candidate))
    check_shared_paths: bool = True

    def __post_init__(self) -> None:
        if self.cpus_per_candidate is not None and not self.cpus_per_candidate > 0:
            raise ConfigError(f"--cpus-per-candidate must be > 0, got {self.cpus_per_candidate}")
        if not self.gpus_per_candidate >= 0:
            raise ConfigError(f"--gpus-per-candidate must be >= 0, got {self.gpus_per_candidate}")
        if self.gpus_per_candidate > 1 and not float(self.gpus_per_candidate).is_integer():
            raise ConfigError(f"--gpus-per-candidate above 1 must be whole, got {self.gpus_per_candidate}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"torch_threads must be >= 1, got {self.torch_threads}")

    @property
    def threads(self) -> int:
        return self.torch_threads or max(1, int(self.cpus_per_candidate or 1))


def in_process_threads() -> int:
    """The torch threads of an in-process run here (what ``cpus_per_candidate`` defaults to)."""
    try:
        import torch
    except ImportError:
        return os.cpu_count() or 1
    return torch.get_num_threads()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip()


@contextmanager
def quiet_thread_warning() -> Iterator[None]:
    """Drop Ray's warning that ``ray.init`` outside the main thread sets no SIGTERM handler (the helper
    thread of :meth:`RayExecutor.begin`; Ray's reaper process still stops the instance if the driver dies).
    A standard ``logging`` filter on the handlers of the public ``ray`` logger, for the block only."""

    def drop(record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()

    handlers = list(logging.getLogger("ray").handlers) + list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(drop)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(drop)


def init_ray(opts: RayOptions) -> bool:
    """``ray.init`` unless Ray is initialised already; True when this call started (or joined) it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if opts.address:
        kwargs["address"] = opts.address
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        where = opts.address or os.environ.get("RAY_ADDRESS") or "a new local instance"
        raise SearchError(f"cannot start or reach Ray at {where}: {first_line(exc)}") from None
    return True


@dataclass(frozen=True)
class ResourcePlan:
    """The options with ``cpus_per_candidate`` resolved, the nodes that fit one candidate, the slots."""

    options: RayOptions
    fitting: list[dict[str, Any]]
    slots: int
    summary: str


def plan_resources(opts: RayOptions) -> ResourcePlan:
    """Nodes of the cluster that can run one candidate and how many candidates run at once (``ray.nodes``)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpu = lambda n: n["Resources"].get("CPU", 0.0)  # noqa: E731
    gpu = lambda n: n["Resources"].get("GPU", 0.0)  # noqa: E731
    if opts.cpus_per_candidate is None:  # as many as in-process, as far as one node has them
        largest = max((cpu(n) for n in nodes), default=1.0)
        want = float(in_process_threads())
        opts = replace(opts, cpus_per_candidate=min(want, largest) if largest > 0 else want)
    assert opts.cpus_per_candidate is not None
    fitting = [n for n in nodes if cpu(n) >= opts.cpus_per_candidate and gpu(n) >= opts.gpus_per_candidate]
    if not fitting:
        big = max(((cpu(n), gpu(n)) for n in nodes), default=(0.0, 0.0))
        raise SearchError(
            f"no node of the Ray cluster offers {opts.cpus_per_candidate:g} CPU(s) and"
            f" {opts.gpus_per_candidate:g} GPU(s) for one candidate (largest node: {big[0]:g} CPU(s),"
            f" {big[1]:g} GPU(s)); lower --cpus-per-candidate / --gpus-per-candidate"
        )
    slots = sum(
        int(min(cpu(n) // opts.cpus_per_candidate,
                gpu(n) // opts.gpus_per_candidate if opts.gpus_per_candidate else float("inf")))
        for n in fitting
    )  # fmt: skip
    total = ray.cluster_resources()
    summary = (
        f"ray: {len(nodes)} node(s), {total.get('CPU', 0):g} CPU(s), {total.get('GPU', 0):g} GPU(s);"
        f" {opts.cpus_per_candidate:g} CPU / {opts.gpus_per_candidate:g} GPU / {opts.threads} torch"
        f" thread(s) per candidate -> up to {slots} candidate(s) at once"
    )
    return ResourcePlan(opts, fitting, max(1, slots), summary)
