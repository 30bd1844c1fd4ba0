"""The run's one statement about the machine's speed now: the bench's probe re-anchoring decision, the same
figure in summary.json and the report, predictions rescaled by it only when it was applied."""

import json

import pytest

from kdnas_deploy.arch import Architecture
from kdnas_deploy.pipeline.summary import RunFacts, anchor_statement, machine_anchor, write_outputs

TEACHER = Architecture.from_string("L=6,H=384,A=12,F=1536")
STUDENT = Architecture.from_string("L=3,H=384,A=12,F=1536")


def _anchor(applied: bool, measured: float) -> dict:
    return {"factor": measured if applied else 1.0, "factor_large": None, "measured_factor": measured,
            "measured_factor_large": None, "applied": applied, "noise_floor_pct": 0.8,
            "statistic": "minimum", "reason": "applied: ..." if applied else "not applied: within noise (...)"}


def _outputs(tmp_path, anchor: dict, student_ms: float = 3.4, degenerate: dict | None = None,
             **teacher_extra) -> dict:
    # predicted_ms as the anchored table's two-probe interpolation gave it: NOT the figure the run must use
    bench = {"bench": {"threads": 2}, "anchor": anchor, "probe_scale": anchor["factor"], "rows": [
        {"path": "t", "median_ms": 10.5, "predicted_ms": 45.5, "predicted_raw_ms": 10.0},
        {"path": "s", "median_ms": student_ms, "predicted_ms": 9.9, "predicted_raw_ms": 3.3},
    ]}
    facts = RunFacts(tmp_path, "sst2", ["cpu"], {"cpu": 0.0}, {})
    teacher = {"teacher": "teacher", "main_metric": "accuracy", "dev_metrics": {"accuracy": 0.9},
               "baseline": {"accuracy": 0.5}, **teacher_extra}
    search = {"winner": {"arch": STUDENT.to_dict(), "dev_metrics": {"accuracy": 0.88}}, "student": "s",
              "run": str(tmp_path / "search"), "degenerate": degenerate}
    return write_outputs(facts, {"cpu": str(tmp_path / "t.json")}, [("t.json", 3.5)], teacher, TEACHER,
                         search, bench, echo=lambda line: None)


def test_a_factor_within_noise_is_not_applied_and_stated_once(tmp_path):
    summary = _outputs(tmp_path, _anchor(False, 1.012))
    stated = summary["machine_anchor"]["statement"]
    assert stated == "probe factor 1.0120: within noise: not applied (noise floor 0.80%)"
    assert summary["machine_anchor"]["applied"] is False and summary["machine_drift_factor"] == 1.0
    assert summary["teacher"]["predicted_ms"] == 10.0 and summary["student"]["predicted_ms"] == 3.3
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["machine_anchor"] == summary["machine_anchor"]
    report = (tmp_path / "report.md").read_text()
    assert f"**Machine speed now (probe)**: {stated}" in report and "| 10.00 |" in report
    assert stated in (tmp_path / "report.html").read_text()


def test_an_applied_factor_rescales_every_prediction_by_the_same_figure(tmp_path):
    summary = _outputs(tmp_path, _anchor(True, 1.5), student_ms=4.5)
    assert summary["teacher"]["predicted_ms"] == 15.0 and summary["student"]["predicted_ms"] == pytest.approx(4.95)
    assert summary["machine_drift_factor"] == 1.5 and summary["student"]["measured_at_table_state_ms"] == 3.0
    stated = "machine 1.50x slower now per the probe (factor 1.5000, applied to the predictions)"
    assert summary["machine_anchor"]["statement"] == stated
    report = (tmp_path / "report.md").read_text()
    assert report.count(stated) == 2  # the speed line and the budget verdict: one figure
    assert "3.03x" not in report and "4.55" not in report


def test_an_older_bench_reads_the_decision_from_its_anchored_table(tmp_path):
    table = tmp_path / "bench_table.json"
    table.write_text(json.dumps({"calibration": {"scale": 1.0, "anchor": _anchor(False, 0.997)}}))
    anchor = machine_anchor({"probe_scale": 1.0, "anchored_table": str(table)})
    assert anchor["applied"] is False and anchor["measured_factor"] == 0.997
    assert anchor_statement(anchor).startswith("probe factor 0.9970: within noise: not applied")


def test_summary_and_report_carry_the_baseline_and_the_retained_gain(tmp_path):
    summary = _outputs(tmp_path, _anchor(False, 1.0))
    assert summary["baseline"] == {"accuracy": 0.5} and summary["retained_gain"] == pytest.approx(0.95)
    assert summary["metric_retained"] == pytest.approx(0.9778, abs=1e-4) and summary["degenerate"] is None
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["baseline"] == {"accuracy": 0.5} and on_disk["retained_gain"] == pytest.approx(0.95)
    report = (tmp_path / "report.md").read_text()
    assert "| trivial baseline | constant prediction |" in report and "accuracy 0.5000" in report
    assert "**Retained gain over the baseline**: 0.95" in report and "WARNING" not in report
    assert "Retained gain over the baseline" in (tmp_path / "report.html").read_text()


def test_report_warns_of_a_weak_teacher_and_a_degenerate_search(tmp_path):
    deg = {"reason": "tied: all 18 proxy scores within 0.0000 (one standard error 0.0146)", "kinds": ["tied"],
           "figures": {"candidates": 18}}
    weak = {"metric": "accuracy", "teacher": 0.9, "baseline": 0.88, "margin": 0.05, "weak": True}
    summary = _outputs(tmp_path, _anchor(False, 1.0), degenerate=deg, baseline={"accuracy": 0.88}, weak_teacher=weak)
    assert summary["degenerate"] == deg and summary["weak_teacher"]["weak"]
    assert summary["retained_gain"] == pytest.approx(0.0)
    report = (tmp_path / "report.md").read_text()
    assert "**WARNING: degenerate search**: tied: all 18" in report and "**WARNING: weak teacher**" in report
