import json

import numpy as np
import pytest
from search_doubles import ReversedExecutor, SyntheticEvaluator, make_run

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import SearchError
from kdnas_deploy.io import read_jsonl


def _log(run_dir):
    rows = read_jsonl(run_dir / "candidates.jsonl")
    return sorted((r["episode"], r["index"], r["arch_str"], round(r["reward"], 12)) for r in rows)


def test_full_run_writes_every_artifact(tmp_path):
    run = make_run(tmp_path / "run")
    summary = run.run()
    d = tmp_path / "run"
    for name in (
        "config.yaml",
        "candidates.jsonl",
        "episodes.jsonl",
        "pareto.json",
        "best_arch.json",
        "search.png",
        "summary.json",
    ):
        assert (d / name).is_file(), name
    rows = read_jsonl(d / "candidates.jsonl")
    assert len(rows) == 12 == summary["evaluations"] == summary["evaluation_budget"]
    assert len({r["arch_str"] for r in rows}) == 12
    for r in rows:
        assert set(r) >= {
            "arch",
            "latency_ms",
            "proxy_metric",
            "reward",
            "seconds",
            "episode",
            "strategy",
            "feasible",
        }
        assert r["feasible"] == (r["latency_ms"]["cpu-fp32"] <= run.budgets.budget_ms[0])
    best = Architecture.parse(str(d / "best_arch.json"))
    feasible = [r for r in rows if r["feasible"]]
    assert best.to_dict() == max(feasible, key=lambda r: r["reward"])["arch"]
    front = json.loads((d / "pareto.json").read_text())["front"]
    assert front and all(f["arch_str"] in {r["arch_str"] for r in rows} for f in front)
    assert summary["teacher_latency_ms"]["cpu-fp32"] > summary["budgets"][0]["budget_ms"]
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(d / "student")
    assert Architecture.from_config(model.config) == best
    assert summary["final"]["winner"]["dev_metrics"]["accuracy"] > 0
    card = (d / "student" / "README.md").read_text()
    import yaml

    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "transformers" and "kdnas-deploy" in meta["tags"]
    assert f"| L (num layers) | {best.num_layers} |" in card and "AutoModelForSequenceClassification" in card
    assert "Predicted:" in card and "accuracy" in card


def test_non_empty_folder_without_resume_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(SearchError, match="not empty"):
        make_run(tmp_path / "run").run()
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    with pytest.raises(SearchError, match="not a search run folder"):
        make_run(tmp_path / "run", resume=True).run()


def test_resume_after_kill_mid_episode_loses_and_repeats_nothing(tmp_path):
    ref = make_run(tmp_path / "ref", finalize=False)
    ref.run()
    killer = SyntheticEvaluator(interrupt_after=7)  # dies inside episode 3 (3 per episode)
    with pytest.raises(KeyboardInterrupt):
        make_run(tmp_path / "run", evaluator=killer, finalize=False).run()
    assert len(read_jsonl(tmp_path / "run" / "candidates.jsonl")) == 7
    again = SyntheticEvaluator()
    make_run(tmp_path / "run", evaluator=again, resume=True, finalize=False).run()
    assert len(again.calls) == 12 - 7  # finished evaluations are reused, not redone
    assert not set(again.calls) & set(killer.calls)
    assert _log(tmp_path / "run") == _log(tmp_path / "ref")


def test_resume_of_a_finished_run_evaluates_nothing(tmp_path):
    make_run(tmp_path / "run").run()
    ev = SyntheticEvaluator()
    summary = make_run(tmp_path / "run", evaluator=ev, resume=True).run()
    assert ev.calls == [] and summary["evaluations"] == 12


def test_resume_with_another_config_is_refused_and_keeps_the_folder(tmp_path):
    make_run(tmp_path / "run", finalize=False).run()
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    with pytest.raises(SearchError, match="different configuration") as err:
        make_run(tmp_path / "run", resume=True, finalize=False, top_k=4).run()
    assert "top_k" in str(err.value)
    with pytest.raises(SearchError, match="budget_ms"):
        make_run(tmp_path / "run", resume=True, finalize=False, budget_ms=0.5).run()
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert after == before


def test_hard_budget_never_evaluates_an_infeasible_candidate(tmp_path):
    run = make_run(tmp_path / "run", hard_budget=True, finalize=False, strategy="evolution", episodes=6)
    run.run()
    rows = read_jsonl(tmp_path / "run" / "candidates.jsonl")
    assert len(rows) == 18 and all(r["feasible"] for r in rows)


def test_two_budgets_feasible_only_when_both_met(tmp_path):
    run = make_run(tmp_path / "run", extra_budget_ms=0.6, finalize=False, hard_budget=True)
    run.run()
    rows = read_jsonl(tmp_path / "run" / "candidates.jsonl")
    assert all(set(r["latency_ms"]) == {"cpu-fp32", "cuda-fp16"} for r in rows)
    assert all(
        r["latency_ms"]["cuda-fp16"] <= 0.6 and r["latency_ms"]["cpu-fp32"] <= run.budgets.budget_ms[0] for r in rows
    )


@pytest.mark.parametrize("strategy", ["kdnas", "random", "evolution"])
def test_execution_order_does_not_change_results(tmp_path, strategy):
    make_run(tmp_path / "a", strategy=strategy, finalize=False, episodes=6).run()
    make_run(tmp_path / "b", strategy=strategy, finalize=False, episodes=6, executor=ReversedExecutor()).run()
    assert _log(tmp_path / "a") == _log(tmp_path / "b")


def test_same_evaluation_budget_for_every_strategy(tmp_path):
    counts = {}
    for s in ("kdnas", "random", "evolution"):
        ev = SyntheticEvaluator()
        make_run(tmp_path / s, strategy=s, evaluator=ev, finalize=False, episodes=5).run()
        counts[s] = len(ev.calls)
    assert set(counts.values()) == {15}


@pytest.mark.slow
def test_kdnas_beats_random_on_average_over_seeds(tmp_path):
    best = {"kdnas": [], "random": []}
    for s in best:
        for seed in range(5):
            best[s].append(
                make_run(tmp_path / f"{s}{seed}", strategy=s, seed=seed, finalize=False, episodes=6).run()[
                    "best_reward"
                ]
            )
    assert np.mean(best["kdnas"]) > np.mean(best["random"])


def test_executor_registry_errors_are_clear():
    from kdnas_deploy.search.executor import LocalExecutor
    from kdnas_deploy.search.executors import make_executor, register_executor

    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(SearchError, match="unknown executor"):
        make_executor("dask")
    def missing_engine(**options):
        import kdnas_deploy.search.no_such_module  # noqa: F401

    register_executor("missing-engine", missing_engine)
    with pytest.raises(SearchError, match="not available"):
        make_executor("missing-engine")


class StartingExecutor(ReversedExecutor):
    """An executor with a ``start()`` hook that waits (up to 10 s) for the evaluator's preparation to begin."""

    remote_start = True

    def __init__(self, prepared_event, fail: bool = False) -> None:
        self.prepared_event, self.fail = prepared_event, fail
        self.saw_prepare_during_start = False

    def start(self, evaluator=None) -> None:
        self.started_with = evaluator
        self.saw_prepare_during_start = self.prepared_event.wait(timeout=10)
        if self.fail:
            raise SearchError("cannot start the executor")


class SignallingEvaluator(SyntheticEvaluator):
    def __init__(self, event, error: Exception | None = None) -> None:
        super().__init__()
        self.event, self.error = event, error

    def prepare(self) -> None:
        self.event.set()
        super().prepare()
        if self.error is not None:
            raise self.error


def test_executor_start_overlaps_the_evaluator_preparation(tmp_path, monkeypatch):
    import threading

    from kdnas_deploy.search.strategies import KdnasStrategy

    warmed = []
    record = classmethod(lambda cls: warmed.append(threading.current_thread().name))
    monkeypatch.setattr(KdnasStrategy, "warm_up", record)
    event = threading.Event()
    ev, ex = SignallingEvaluator(event), StartingExecutor(event)
    make_run(tmp_path / "r", evaluator=ev, executor=ex, finalize=False).run()
    assert ex.saw_prepare_during_start  # prepare ran while start() was still waiting
    assert ex.started_with is ev  # start() gets the evaluator, to warm workers with it
    assert ev.prepared == 1
    assert len(warmed) == 1 and warmed[0].startswith("kdnas-prepare")  # the strategy warmed up in that thread


def test_a_preparation_error_wins_over_a_start_error_and_nothing_is_evaluated(tmp_path):
    import threading

    from kdnas_deploy.errors import DataError

    event = threading.Event()
    ev = SignallingEvaluator(event, error=DataError("train split is empty"))
    with pytest.raises(DataError, match="train split is empty"):
        make_run(tmp_path / "r", evaluator=ev, executor=StartingExecutor(event, fail=True), finalize=False).run()
    assert ev.calls == []
    event2 = threading.Event()
    ev2 = SignallingEvaluator(event2)
    with pytest.raises(SearchError, match="cannot start"):
        make_run(tmp_path / "r2", evaluator=ev2, executor=StartingExecutor(event2, fail=True), finalize=False).run()
    assert ev2.calls == []


def test_settings_a_strategy_does_not_read_do_not_block_its_resume(tmp_path):
    from kdnas_deploy.search.config import ControllerConfig

    make_run(tmp_path / "random", strategy="random", finalize=False).run()
    ev = SyntheticEvaluator()
    other = ControllerConfig(prior="none", hidden_dim=8)
    make_run(tmp_path / "random", strategy="random", evaluator=ev, resume=True, finalize=False, controller=other).run()
    assert ev.calls == []  # resumed: everything was already evaluated
    make_run(tmp_path / "kdnas", finalize=False).run()
    with pytest.raises(SearchError, match="controller.prior"):
        make_run(tmp_path / "kdnas", resume=True, finalize=False, controller=other).run()


def test_resume_may_distill_more_finalists_without_searching_again(tmp_path):
    import yaml

    make_run(tmp_path / "run").run()  # final_top=1
    ev = SyntheticEvaluator()
    lines = []
    run = make_run(tmp_path / "run", evaluator=ev, resume=True, final_top=2)
    run.echo = lines.append
    summary = run.run()
    assert ev.calls == []  # no candidate evaluated again
    finals = sorted(p.name for p in (tmp_path / "run" / "final").iterdir())
    assert len(finals) == 2 and len(summary["final"]["candidates"]) == 2
    assert any("reused" in line for line in lines)  # the first finalist was not distilled again
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert stored["search"]["final_top"] == 2
    held = json.loads((tmp_path / "run" / "student" / "kdnas_student.json").read_text())
    assert held["arch_str"] == summary["final"]["winner"]["arch_str"]  # the student folder follows the winner


class ClosingExecutor(ReversedExecutor):
    """Records where ``close()`` ran; optionally fails there."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.closed_in = fail, []

    def close(self) -> None:
        import threading

        self.closed_in.append(threading.current_thread().name)
        if self.fail:
            raise SearchError("ray did not stop")


def test_the_executor_closes_while_results_are_written_and_its_error_surfaces(tmp_path):
    ex = ClosingExecutor()
    make_run(tmp_path / "ok", executor=ex, finalize=False).run()
    assert ex.closed_in == ["kdnas-executor-close"] and (tmp_path / "ok" / "best_arch.json").is_file()
    failing = ClosingExecutor(fail=True)
    with pytest.raises(SearchError, match="ray did not stop"):
        make_run(tmp_path / "bad", executor=failing, finalize=False).run()
    assert (tmp_path / "bad" / "best_arch.json").is_file()  # the results were still written


class InterruptedEvaluator(SyntheticEvaluator):
    def evaluate(self, request):
        raise KeyboardInterrupt


def test_an_interrupted_search_closes_its_executor_at_once(tmp_path):
    ex = ClosingExecutor()
    with pytest.raises(KeyboardInterrupt):
        make_run(tmp_path / "r", evaluator=InterruptedEvaluator(), executor=ex, finalize=False).run()
    assert len(ex.closed_in) == 1 and ex.closed_in[0] != "kdnas-executor-close"


def test_a_refused_run_folder_closes_the_executor_it_began(tmp_path):
    """Regression: open() ran outside the try that closes the executor, so a refused folder leaked a Ray
    instance that begin() had already started."""
    from search_doubles import RecordingExecutor

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "foreign.txt").write_text("x")
    ex = RecordingExecutor()
    with pytest.raises(SearchError, match="not empty"):
        make_run(tmp_path / "r", executor=ex, finalize=False).run()
    assert ex.calls == ["begin", "close"]
    ok = RecordingExecutor()
    make_run(tmp_path / "ok", executor=ok, finalize=False).run()
    assert ok.calls == ["begin", "start", "close"]  # begin once, close once


def test_a_failed_check_closes_the_executor(tmp_path):
    from search_doubles import RecordingExecutor

    ex = RecordingExecutor()

    def check():
        raise SearchError("wrong teacher")

    with pytest.raises(SearchError, match="wrong teacher"):
        make_run(tmp_path / "r", executor=ex, finalize=False).run(check=check)
    assert ex.calls == ["begin", "close"] and not (tmp_path / "r").exists()
