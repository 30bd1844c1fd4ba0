"""Proxy standard errors and the degenerate-search verdict (tied candidates, candidates at the baseline)."""

from __future__ import annotations

import json
import logging
import math

import pytest
from search_doubles import SyntheticEvaluator, make_run, synthetic_metric

from kdnas_deploy.errors import SearchError
from kdnas_deploy.io import read_jsonl
from kdnas_deploy.search.degenerate import detect_degenerate, metric_se, proxy_uncertainty
from kdnas_deploy.search.executor import EvalRequest, EvalResult


def test_standard_errors():
    assert metric_se("accuracy", 0.8, 400) == pytest.approx(math.sqrt(0.8 * 0.2 / 400))
    assert metric_se("f1", 0.5, 100) == pytest.approx(0.05)
    assert metric_se("matthews_correlation", 0.0, 101) == pytest.approx(0.1)
    assert metric_se("pearson", 0.6, 65) == pytest.approx(0.64 / 8)
    assert metric_se("accuracy", 0.8, 1) is None and metric_se("accuracy", float("nan"), 50) is None
    rec = proxy_uncertainty(0.75, {"heldout_n": 300, "main_metric": "accuracy", "baseline": 0.52})
    assert rec["proxy_n"] == 300 and rec["proxy_baseline"] == 0.52
    assert rec["proxy_se"] == pytest.approx(0.025, abs=1e-6) and rec["proxy_text"] == "0.7500 ± 0.0250"
    assert proxy_uncertainty(0.75, {})["proxy_se"] is None


def _rec(score, se=0.02, base=0.5, n=500):
    return {"proxy_score": score, "proxy_se": se, "proxy_baseline": base, "proxy_n": n}


def test_the_issues_mrpc_search_is_tied():
    # 18 candidates, every one at F1 0.8072 on the 733-row slice ("paraphrase" for everything)
    se = metric_se("f1", 0.8072, 733)
    deg = detect_degenerate([_rec(0.8072, se, 0.8072, 733) for _ in range(18)])
    assert deg is not None and "tied" in deg["kinds"] and "at_baseline" in deg["kinds"]
    assert deg["figures"]["candidates"] == 18 and deg["figures"]["spread"] == 0.0
    assert deg["figures"]["baseline"] == pytest.approx(0.8072)


def test_the_issues_nli_search_is_within_noise_of_the_baseline():
    # proxy scores 0.50-0.62 on 498 rows, baseline (majority) 0.527: spread > 1 SE but all within 2 SE?
    scores = [0.50, 0.53, 0.55, 0.56]
    recs = [_rec(s, metric_se("accuracy", s, 498), 0.527, 498) for s in scores]
    deg = detect_degenerate(recs)
    assert deg is not None and deg["kinds"] == ["at_baseline"]
    assert "0.5270" in deg["reason"]


def test_a_search_with_signal_is_not_degenerate():
    recs = [_rec(s, metric_se("accuracy", s, 800), 0.5, 800) for s in (0.70, 0.78, 0.85, 0.88)]
    assert detect_degenerate(recs) is None
    assert detect_degenerate([]) is None


def test_without_standard_errors_only_exact_ties_count():
    assert detect_degenerate([{"proxy_score": 0.7}, {"proxy_score": 0.7}])["kinds"] == ["tied"]
    assert detect_degenerate([{"proxy_score": 0.7}, {"proxy_score": 0.71}]) is None


class ConstantEvaluator(SyntheticEvaluator):
    """Every candidate answers the majority class: the same proxy score, equal to the baseline."""

    def evaluate(self, request: EvalRequest) -> EvalResult:
        self.calls.append(request.arch)
        info = {"heldout_n": 733, "main_metric": "f1", "baseline": 0.8072}
        return EvalResult(request, score=0.8072, final_loss=0.3, seconds=0.01, metrics={"f1": 0.8072}, info=info)


def test_search_records_proxy_se_and_the_degenerate_verdict(tmp_path, caplog):
    run = make_run(tmp_path / "run", evaluator=ConstantEvaluator(), episodes=2, candidates=6, on_degenerate="warn")
    with caplog.at_level(logging.WARNING, logger="kdnas_deploy"):
        summary = run.run()
    assert "WARNING: degenerate search" in caplog.text and "random draw" in caplog.text
    deg = summary["degenerate"]
    assert deg["kinds"] == ["tied", "at_baseline"] and deg["figures"]["heldout_n"] == 733
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["degenerate"] == deg
    rows = read_jsonl(tmp_path / "run" / "candidates.jsonl")
    assert all(r["proxy_se"] == pytest.approx(metric_se("f1", 0.8072, 733), abs=1e-6) for r in rows)
    assert all(r["proxy_text"].startswith("0.8072 ± ") for r in rows)


def test_a_search_with_signal_records_no_verdict(tmp_path, caplog):
    class Informative(SyntheticEvaluator):
        def evaluate(self, request):
            m = synthetic_metric(request.arch, request.seed)
            return EvalResult(
                request,
                score=m,
                final_loss=1 - m,
                seconds=0.01,
                metrics={"accuracy": m},
                info={"heldout_n": 2000, "main_metric": "accuracy", "baseline": 0.5},
            )

    with caplog.at_level(logging.WARNING, logger="kdnas_deploy"):
        summary = make_run(tmp_path / "run", evaluator=Informative(), episodes=2, candidates=6).run()
    assert summary["degenerate"] is None and "degenerate" not in caplog.text


class SignalAtTwiceTheBudget(SyntheticEvaluator):
    """Constant at the search's proxy budget, informative at twice it (a proxy that was too short)."""

    def evaluate(self, request: EvalRequest) -> EvalResult:
        self.calls.append((request.arch, request.proxy_scale))
        m = 0.8072 if request.proxy_scale == 1 else synthetic_metric(request.arch, request.seed, noise=0.0) + 0.2
        info = {"heldout_n": 2000, "main_metric": "f1", "baseline": 0.8072, "proxy_steps": 6 * request.proxy_scale}
        return EvalResult(request, score=min(m, 1.0), final_loss=0.3, seconds=0.01, metrics={"f1": m}, info=info)


def test_a_degenerate_search_raises_the_proxy_budget_once_and_ranks_the_reevaluation(tmp_path):
    ev = SignalAtTwiceTheBudget()
    summary = make_run(tmp_path / "run", evaluator=ev, episodes=2, candidates=6).run()
    first = [a for a, scale in ev.calls if scale == 1]
    assert sorted(map(str, first)) == sorted(str(a) for a, scale in ev.calls if scale == 2)  # every one, once
    esc = summary["escalation"]
    assert summary["degenerate"] is None and esc["scale"] == 2 and esc["first"]["kinds"] == ["tied", "at_baseline"]
    again = read_jsonl(tmp_path / "run" / "escalated.jsonl")
    assert len(again) == len(first) and {r["proxy_round"] for r in again} == {1}
    assert {r["proxy_steps"] for r in again} == {12.0}
    assert summary["best"]["proxy_score"] == max(r["proxy_score"] for r in again)
    assert all(r["proxy_round"] == 0 for r in read_jsonl(tmp_path / "run" / "candidates.jsonl"))


def test_still_degenerate_after_escalation_stops_with_one_line_and_resume_does_not_reevaluate(tmp_path):
    ev = ConstantEvaluator()
    with pytest.raises(SearchError, match=r"^degenerate search even at 2x the proxy budget: tied") as err:
        make_run(tmp_path / "run", evaluator=ev, episodes=2, candidates=6).run()
    assert "\n" not in str(err.value) and "on_degenerate: warn" in str(err.value)
    assert not (tmp_path / "run" / "summary.json").exists()
    calls = len(ev.calls)
    assert len(read_jsonl(tmp_path / "run" / "escalated.jsonl")) == calls // 2
    with pytest.raises(SearchError, match="even at 2x"):
        make_run(tmp_path / "run", evaluator=ev, episodes=2, candidates=6, resume=True).run()
    assert len(ev.calls) == calls  # both rounds read back from the run folder


def test_on_degenerate_stop_stops_without_reevaluating(tmp_path):
    ev = ConstantEvaluator()
    with pytest.raises(SearchError, match=r"^degenerate search: tied"):
        make_run(tmp_path / "run", evaluator=ev, episodes=2, candidates=6, on_degenerate="stop").run()
    assert not (tmp_path / "run" / "escalated.jsonl").exists()
