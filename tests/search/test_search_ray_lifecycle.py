"""The Ray executor's lifecycle: broken workers, cancelled candidates, starting and stopping Ray, warm-up.

Skipped where Ray is not installed (``pip install 'kdnas-deploy[ray]'``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from search_doubles import SlowEvaluator, SyntheticEvaluator

from kdnas_deploy.errors import SearchError

ray = pytest.importorskip("ray")

from kdnas_deploy.search.ray_executor import RayExecutor  # noqa: E402 - needs ray


def test_worker_with_a_half_imported_torch_exits_so_ray_replaces_it():
    """An interrupted ``import torch`` breaks later imports in that process; the worker exits (Ray retries)."""
    script = """
import sys
class HalfImported:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise RuntimeError('generic_type: cannot initialize type "RpcBackendOptions"')
sys.meta_path.insert(0, HalfImported())
from kdnas_deploy.search.ray_executor import _pin_threads
_pin_threads(1)
print("still running")
"""
    from kdnas_deploy.search.ray_executor import BROKEN_WORKER_EXIT_CODE

    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == BROKEN_WORKER_EXIT_CODE, r.stdout + r.stderr
    assert "still running" not in r.stdout and "cannot import torch" in r.stderr


def test_a_driver_that_stops_early_kills_its_running_candidates(tmp_path, ray_cluster, monkeypatch):
    """Pending candidates are cancelled with force=True: a KeyboardInterrupt landing inside ``import torch``
    would leave the worker process unable to import torch again."""
    from search_doubles import TINY_SPACE

    from kdnas_deploy.search.executor import EvalRequest

    calls = []
    real_cancel = ray.cancel

    def recording_cancel(ref, **kw):
        calls.append(kw)
        return real_cancel(ref, **kw)

    monkeypatch.setattr(ray, "cancel", recording_cancel)
    ex = RayExecutor(cpus_per_candidate=1, echo=lambda s: None)
    requests = [EvalRequest(arch=a, episode=1, index=i, seed=i) for i, a in enumerate(TINY_SPACE.sample(4, rng=0))]
    results = ex.run(SlowEvaluator(), requests)
    next(results)
    results.close()
    ex.close()
    assert calls and all(kw.get("force") is True for kw in calls)


def test_closing_an_executor_that_started_ray_stops_it_through_the_public_api():
    """The executor that started an instance shuts it down on close (``ray.shutdown``), and the Ray code of
    the search uses Ray's public API only (issue 21.7: no ``ray._private``). On an instance of its own."""
    import kdnas_deploy.search.ray_executor as ray_executor
    import kdnas_deploy.search.ray_startup as ray_startup
    import kdnas_deploy.search.ray_worker as ray_worker

    for mod in (ray_executor, ray_startup, ray_worker):
        code = Path(mod.__file__).read_text()
        assert "ray._private" not in code.replace("``ray._private``", "") and "_raylet" not in code, mod.__name__
    script = """
import ray
from kdnas_deploy.search.ray_executor import RayExecutor
ex = RayExecutor(address="local", cpus_per_candidate=1, echo=lambda s: None)
ex.start()
print("ray up:", ray.is_initialized())
ex.close()
print("ray still up:", ray.is_initialized())
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ray up: True" in r.stdout and "ray still up: False" in r.stdout


def test_begin_starts_ray_in_the_background_and_the_instance_outlives_the_helper_call(tmp_path):
    """``begin()`` runs ``ray.init`` in a helper thread; Ray's processes die with the thread that started
    them, so the thread must live until ``close()``. Its errors surface in ``start()``. Private instances,
    in a subprocess."""
    script = """
import threading, time, ray
import search_doubles
from search_doubles import SyntheticEvaluator, TINY_SPACE
from kdnas_deploy.search.executor import EvalRequest
from kdnas_deploy.search.ray_executor import RayExecutor
ex = RayExecutor(address="local", cpus_per_candidate=1, echo=lambda s: None)
ex.begin()
ex.begin()  # idempotent
names = [t.name for t in threading.enumerate()]
assert names.count("kdnas-ray-connect") == 1, names
ex.start()
ray.cloudpickle.register_pickle_by_value(search_doubles)
time.sleep(1.0)  # the instance must still be up once ray.init has returned in the helper thread
reqs = [EvalRequest(arch=a, episode=0, index=i, seed=i) for i, a in enumerate(TINY_SPACE.sample(2, rng=0))]
print("results:", len(list(ex.run(SyntheticEvaluator(), reqs))))
ex.close()
print("ray still up:", ray.is_initialized())
print("helper alive:", any(t.name == "kdnas-ray-connect" for t in threading.enumerate()))
bad = RayExecutor(address="local", cpus_per_candidate=64, echo=lambda s: None)  # fails once connected
bad.begin()
try:
    bad.start()
except Exception as exc:
    print("too many cpus:", type(exc).__name__)
bad.close()
print("after the error, ray still up:", ray.is_initialized())
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "results: 2" in r.stdout
    assert "ray still up: False" in r.stdout and "helper alive: False" in r.stdout
    assert "too many cpus: SearchError" in r.stdout and "after the error, ray still up: False" in r.stdout
    assert "SIGTERM handler is not set" not in r.stderr


class WarmUpEvaluator(SyntheticEvaluator):
    """Records in each result whether ``warm_up()`` ran on the worker copy that evaluated it."""

    warmed = False

    def warm_up(self) -> None:
        self.warmed = True

    def evaluate(self, request):
        res = super().evaluate(request)
        return res.__class__(res.request, res.score, res.final_loss, res.seconds, res.metrics,
                             {"warmed": self.warmed, "pid": os.getpid()})  # fmt: skip


def test_start_warms_the_workers_and_candidates_wait_for_the_evaluator_warm_up(ray_cluster):
    from search_doubles import TINY_SPACE

    from kdnas_deploy.search.executor import EvalRequest

    ex = RayExecutor(cpus_per_candidate=1, echo=lambda s: None)
    ev = WarmUpEvaluator()
    ex.start(ev)
    assert len(ex._warm_refs) == 2 and ex._shared_warm is ex._warm_refs[0]  # one slot runs ev.warm_up()
    warmed_pid = ray.get(ex._warm_refs[0])
    requests = [EvalRequest(arch=a, episode=0, index=i, seed=i) for i, a in enumerate(TINY_SPACE.sample(4, rng=0))]
    results = list(ex.run(ev, requests))
    assert ex._shared_warm is None  # run() waited for it before submitting
    ex.close()
    assert len(results) == 4
    for r in results:  # the worker that ran the warm-up evaluates with its warmed copy of the evaluator
        assert r.info["warmed"] is (r.info["pid"] == warmed_pid)


class FailingWarmUpEvaluator(SyntheticEvaluator):
    def warm_up(self) -> None:
        raise RuntimeError("teacher folder vanished")


def test_a_failed_warm_up_is_a_clear_error_before_any_candidate(ray_cluster):
    from search_doubles import TINY_SPACE

    from kdnas_deploy.search.executor import EvalRequest

    ex = RayExecutor(cpus_per_candidate=1, echo=lambda s: None)
    ev = FailingWarmUpEvaluator()
    ex.start(ev)
    requests = [EvalRequest(arch=a, episode=0, index=i, seed=i) for i, a in enumerate(TINY_SPACE.sample(2, rng=0))]
    with pytest.raises(SearchError, match="warming up the workers failed: RuntimeError: teacher folder vanished"):
        list(ex.run(ev, requests))
    ex.close()
