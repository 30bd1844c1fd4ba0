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
import ray, search_doubles
from search_doubles import SlowEvaluator
from kdnas_deploy.search.ray_executor import RayExecutor
ray.cloudpickle.register_pickle_by_value(search_doubles)
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
from search_doubles import SlowEvaluator, SyntheticEvaluator, make_run
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
