"""The Ray executor on a local Ray instance (2 CPUs, no dashboard): same log as in-process, retries, resume.

Skipped where Ray is not installed (``pip install 'kdnas-deploy[ray]'``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import search_doubles
from search_doubles import SyntheticEvaluator, make_run

from kdnas_deploy.errors import ConfigError, DataError, SearchError
from kdnas_deploy.io import read_jsonl

ray = pytest.importorskip("ray")

from kdnas_deploy.search.ray_executor import RayExecutor  # noqa: E402 - needs ray

TIMING_KEYS = {"seconds"}


@pytest.fixture(scope="module")
def ray_cluster():
    """One local instance for the module; tests' evaluator classes are shipped to workers by value."""
    if ray.is_initialized():
        ray.shutdown()
    ray.cloudpickle.register_pickle_by_value(search_doubles)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # Ray >= 2.x on Linux maps 127.0.0.1 back to the node's address, so no loopback-only option exists;
    # the instance is private to this machine (token authentication is on by default since Ray 2.5x).
    # address="local": always a new private instance, never a cluster that ``ray start`` left on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _log(run_dir: Path) -> list[dict]:
    rows = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_jsonl(run_dir / "candidates.jsonl")]
    return sorted(rows, key=lambda r: (r["episode"], r["index"]))


def _local(tmp_path: Path, **kw) -> list[dict]:
    make_run(tmp_path / "local", **kw).run()
    return _log(tmp_path / "local")


class FlakyEvaluator(SyntheticEvaluator):
    """Fails each candidate's first attempt: by raising, or by killing its worker process (a lost worker)."""

    def __init__(self, marker_dir: Path, mode: str) -> None:
        super().__init__()
        self.marker_dir, self.mode = str(marker_dir), mode

    def evaluate(self, request):
        marker = Path(self.marker_dir) / request.arch.short()
        if not marker.exists():
            marker.write_text("failed once")
            if self.mode == "crash":
                os._exit(1)
            raise RuntimeError(f"flaky failure on {request.arch.short()}")
        return super().evaluate(request)


class BrokenEvaluator(SyntheticEvaluator):
    """Always fails on architectures with one layer (``error``: a RuntimeError, or a DataError)."""

    def __init__(self, error: str = "runtime") -> None:
        super().__init__()
        self.error = error

    def evaluate(self, request):
        if request.arch.num_layers == 1:
            if self.error == "data":
                raise DataError("the proxy set is missing on this node")
            raise RuntimeError("CUDA error: device-side assert")
        return super().evaluate(request)


class SlowEvaluator(SyntheticEvaluator):
    def evaluate(self, request):
        time.sleep(0.4)
        return super().evaluate(request)


@pytest.mark.parametrize("strategy", ["kdnas", "evolution"])
def test_ray_log_equals_in_process_log(tmp_path, ray_cluster, strategy):
    expected = _local(tmp_path, strategy=strategy, seed=3)
    ex = RayExecutor(echo=lambda s: None)
    summary = make_run(tmp_path / "ray", strategy=strategy, seed=3, executor=ex).run()
    assert _log(tmp_path / "ray") == expected
    assert (tmp_path / "ray" / "episodes.jsonl").read_text() == (tmp_path / "local" / "episodes.jsonl").read_text()
    local_best = json.loads((tmp_path / "local" / "best_arch.json").read_text())
    assert json.loads((tmp_path / "ray" / "best_arch.json").read_text()) == local_best
    assert summary["evaluations"] == len(expected) == 12
    assert set(ex.attempts.values()) == {1}
    assert ray.is_initialized()  # the executor did not shut down an instance it did not start


@pytest.mark.parametrize("mode", ["raise", "crash"])
def test_failed_or_lost_worker_is_retried_and_nothing_dropped(tmp_path, ray_cluster, mode):
    expected = _local(tmp_path, episodes=2, finalize=False)
    markers = tmp_path / "markers"
    markers.mkdir()
    ex = RayExecutor(max_retries=2, echo=lambda s: None)
    make_run(tmp_path / "ray", episodes=2, finalize=False, executor=ex, evaluator=FlakyEvaluator(markers, mode)).run()
    assert _log(tmp_path / "ray") == expected
    assert len(list(markers.iterdir())) == len(expected)  # every candidate failed once ...
    if mode == "raise":  # ... and was resubmitted by the driver (a lost worker is resubmitted by Ray)
        assert set(ex.attempts.values()) == {2}


def test_candidate_failing_beyond_the_bound_is_reported_then_resumable(tmp_path, ray_cluster):
    expected = _local(tmp_path, finalize=False)
    out = tmp_path / "ray"
    ex = RayExecutor(max_retries=1, echo=lambda s: None)
    with pytest.raises(SearchError, match=r"could not be evaluated: L=1,.* after 2 attempt\(s\).*--resume"):
        make_run(out, finalize=False, executor=ex, evaluator=BrokenEvaluator()).run()
    logged = _log(out)
    assert logged and all(r["arch"]["num_layers"] != 1 for r in logged)
    failed = [req for req, n in ex.attempts.items() if req.arch.num_layers == 1]
    assert failed and all(ex.attempts[req] == 2 for req in failed)
    # the rest of the failing episode was drained and logged, not dropped
    episode = failed[0].episode
    siblings = [req for req in ex.attempts if req.episode == episode and req.arch.num_layers != 1]
    assert {r["index"] for r in logged if r["episode"] == episode} == {req.index for req in siblings}
    make_run(out, finalize=False, resume=True, executor=RayExecutor(echo=lambda s: None)).run()
    assert _log(out) == expected


def test_input_errors_are_not_retried(tmp_path, ray_cluster):
    ex = RayExecutor(max_retries=3, echo=lambda s: None)
    with pytest.raises(SearchError, match="after 1 attempt.*DataError: the proxy set is missing"):
        make_run(tmp_path / "ray", finalize=False, executor=ex, evaluator=BrokenEvaluator("data")).run()


def test_killed_driver_resumes_to_the_same_log(tmp_path, ray_cluster):
    expected = _local(tmp_path, finalize=False)
    out = tmp_path / "ray"
    script = f"""
import sys
sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(search_doubles.__file__).parents[2])!r}]
from search_doubles import make_run
import ray, search_doubles, test_search_ray
from test_search_ray import SlowEvaluator
from kdnas_deploy.search.ray_executor import RayExecutor
ray.cloudpickle.register_pickle_by_value(search_doubles)
ray.cloudpickle.register_pickle_by_value(test_search_ray)
make_run({str(out)!r}, finalize=False, evaluator=SlowEvaluator(),
         executor=RayExecutor(address={ray_cluster!r}, echo=print)).run()
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(read_jsonl(out / "candidates.jsonl")) < 4:
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the Ray driver logged nothing in 120 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(read_jsonl(out / "candidates.jsonl"))
    assert 4 <= partial < len(expected)
    make_run(out, finalize=False, resume=True, executor=RayExecutor(echo=lambda s: None)).run()
    assert _log(out) == expected


def test_bad_resources_are_clear_errors(tmp_path, ray_cluster):
    with pytest.raises(ConfigError, match="cpus-per-candidate must be > 0"):
        RayExecutor(cpus_per_candidate=0)
    with pytest.raises(ConfigError, match="gpus-per-candidate must be >= 0"):
        RayExecutor(gpus_per_candidate=-1)
    ex = RayExecutor(gpus_per_candidate=1, echo=lambda s: None)
    with pytest.raises(SearchError, match=r"no node of the Ray cluster offers \d+ CPU.*1 GPU"):
        make_run(tmp_path / "gpu", finalize=False, executor=ex).run()


def test_cli_ray_options_need_the_ray_executor(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "kdnas_deploy", "search", "--teacher", str(tmp_path), "--task", "sst2"]
        + ["--out", str(tmp_path / "run"), "--budget", "t.json:3", "--cpus-per-candidate", "2"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "need --executor ray" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_real_distillation_through_ray_equals_in_process(tmp_path, ray_cluster):
    """The distillation evaluator on the built-in task: identical metrics and rewards, one shared cache."""
    pytest.importorskip("kdnas_deploy.tasks")
    pytest.importorskip("kdnas_deploy.distill.engine")
    import torch
    from test_search_with_distill import _run  # the tiny setup of the in-process distillation test

    teacher = _make_teacher(tmp_path)
    _run(tmp_path / "local", teacher).run()
    run = _run(tmp_path / "ray", teacher)
    # one CPU per task (two candidates at once) but as many torch threads as in-process: same numerics
    run.executor = RayExecutor(cpus_per_candidate=1, torch_threads=torch.get_num_threads(), echo=lambda s: None)
    run.run()
    assert _log(tmp_path / "ray") == _log(tmp_path / "local")
    entries = [p for p in (tmp_path / "ray" / "teacher_cache").iterdir() if not p.name.startswith(".")]
    assert entries and all((p / "meta.json").is_file() for p in entries)  # published once, read by all


def _make_teacher(tmp_path: Path) -> Path:
    from test_search_with_distill import _teacher

    return _teacher(tmp_path / "teacher")


@pytest.mark.slow
def test_preflight_checks_shared_paths_on_the_other_nodes(tmp_path):
    """A two-node cluster on this machine: the second node runs the preflight; a node that cannot see the
    evaluator's files stops the search before any candidate runs (simulated by a stricter check)."""
    script = f"""
import sys
sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(search_doubles.__file__).parents[2])!r}]
import ray, search_doubles
from ray.cluster_utils import Cluster
from search_doubles import SyntheticEvaluator, make_run
from kdnas_deploy.errors import SearchError
from kdnas_deploy.search import ray_executor
from kdnas_deploy.search.ray_executor import RayExecutor
ray.cloudpickle.register_pickle_by_value(search_doubles)
cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1, "include_dashboard": False}})
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
ev = SyntheticEvaluator()
ev.cache_dir = {str(tmp_path)!r}
lines = []
make_run({str(tmp_path / "ok")!r}, finalize=False, episodes=1, evaluator=ev,
         executor=RayExecutor(echo=lines.append)).run()
print("OK", lines[0])

def blind(paths):
    return {{"host": "node-b", "missing": list(paths), "python": ""}}

ray_executor.check_paths_on_node = blind
try:
    make_run({str(tmp_path / "blind")!r}, finalize=False, episodes=1, evaluator=ev,
             executor=RayExecutor(echo=print)).run()
except SearchError as exc:
    print("REFUSED", exc)
ray.shutdown()
cluster.shutdown()
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "OK ray: 2 node(s), 2 CPU(s)" in r.stdout, r.stdout + r.stderr[-3000:]
    assert f"REFUSED ray node node-b cannot see {tmp_path.resolve()}" in r.stdout, r.stdout + r.stderr[-3000:]
    assert "shared" in r.stdout or "every node mounts" in r.stdout
    assert not (tmp_path / "blind" / "candidates.jsonl").exists()  # nothing ran


def test_cli_ray_options_reach_the_executor(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from kdnas_deploy.cli.search import search
    from kdnas_deploy.search import api

    seen = {}

    def fake_run_search(config, out, **kw):  # the command's output, not the search, is under test here
        seen.update(kw, config=config)
        raise SearchError("stop")

    monkeypatch.setattr(api, "search_config", lambda **kw: kw)
    monkeypatch.setattr(api, "run_search", fake_run_search)
    args = [
        "--teacher",
        str(tmp_path),
        "--task",
        "sst2",
        "--out",
        str(tmp_path / "r"),
        "--budget",
        "t.json:3",
    ]
    args += ["--executor", "ray", "--ray-address", "auto", "--gpus-per-candidate", "0.5"]
    r = CliRunner().invoke(search, args)
    assert isinstance(r.exception, SearchError)
    assert seen["executor"].name == "ray"
    assert seen["executor"].options == {"address": "auto", "gpus_per_candidate": 0.5}


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


def test_closing_an_executor_that_started_ray_stops_the_autoscaler_monitor_first():
    """``ray.shutdown()`` gives each process 1 s to exit on SIGTERM and the idle monitor never does: the
    executor kills it first. Checked on an instance of its own (a subprocess), not the module's."""
    script = """
import ray
from ray._private import worker
from kdnas_deploy.search.ray_executor import RayExecutor
ex = RayExecutor(address="local", cpus_per_candidate=1, echo=lambda s: None)
ex.start()
monitor = [p.process for p in worker._global_node.all_processes["monitor"]]
assert monitor and monitor[0].poll() is None, "no running monitor to begin with"
shut = ray.shutdown
def checked_shutdown(*a, **k):
    print("monitor exited before shutdown:", monitor[0].poll() is not None)
    return shut(*a, **k)
ray.shutdown = checked_shutdown
ex.close()
print("ray still up:", ray.is_initialized())
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "monitor exited before shutdown: True" in r.stdout
    assert "ray still up: False" in r.stdout


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
