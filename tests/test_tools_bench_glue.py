"""tools/bench_glue.py's table arithmetic on made-up step results (no run): retained ratio and gain, speedups,
the GLUE average, targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.bench_glue import averages, markdown, table_row, targets


def _steps(teacher: float, fp32: float, int8_onnx: float, hand: float):
    model = {"params": 22_000_000, "dev_metrics": {"accuracy": teacher}}
    run = {"summary": {"teacher": model, "baseline": {"accuracy": 0.5},
                       "student": {"params": 5_000_000, "dev_metrics": {"accuracy": fp32}}},
           "wall_s": 100.0, "peak_rss_gb": 2.0}  # fmt: skip
    int8 = {"summary": {"student": {"params": 4_000_000, "dev_metrics": {"accuracy": 0.0},
                                    "onnx_dev_metrics": {"accuracy": int8_onnx}}}, "wall_s": 50.0,
            "peak_rss_gb": 2.5}  # fmt: skip
    hand_step = {"params": 11_000_000, "dev_metrics": {"accuracy": hand}, "seconds": 10.0}
    rows = {"teacher_onnx": 9.0, "teacher_pytorch": 18.0, "hand": 3.0, "kdnas_fp32": 2.5, "kdnas_int8": 2.0}
    bench = {"rows": {k: {"median_ms": v, "predicted_ms": v} for k, v in rows.items()}, "seconds": 5.0}
    return run, int8, hand_step, bench


def test_a_row_carries_ratio_gain_and_both_speedups():
    row = table_row("builtin", None, *_steps(0.9, 0.88, 0.87, 0.85))
    s = row["models"]["kdnas_fp32"]
    assert s["retained"] == pytest.approx(0.88 / 0.9, abs=1e-4) and s["retained_gain"] == pytest.approx(0.95)
    assert (s["speedup_vs_onnx_teacher"], s["speedup_vs_pytorch_teacher"]) == (3.6, 7.2)
    assert row["models"]["kdnas_int8"]["metrics"]["accuracy"] == 0.87  # the int8 graph's, not PyTorch's
    assert (row["teacher_margin"], row["wall_s"], row["peak_rss_gb"]) == (0.4, 165.0, 2.5)


def test_an_int8_row_the_bench_cannot_price_takes_its_own_runs_int8_table_prediction():
    fp32, int8, hand, bench = _steps(0.9, 0.88, 0.87, 0.85)
    bench["rows"]["kdnas_int8"]["predicted_ms"] = None  # the bench prices with the fp32 table only
    int8["summary"]["student"]["predicted_raw_ms"] = 1.23
    row = table_row("builtin", None, fp32, int8, hand, bench)
    assert row["models"]["kdnas_int8"]["predicted_ms"] == 1.23
    assert row["models"]["kdnas_fp32"]["predicted_ms"] == 2.5  # priced by the bench, as before


def test_average_and_targets_say_value_target_met():
    rows = {"a": table_row("builtin", None, *_steps(0.9, 0.88, 0.87, 0.85)),
            "b": table_row("builtin", None, *_steps(0.8, 0.70, 0.60, 0.70))}  # fmt: skip
    avg = averages(rows)
    assert avg["kdnas_fp32_over_hand_points"] == pytest.approx(1.5)
    t = targets(rows, avg)
    assert all(set(v) == {"value", "target", "met"} for v in t.values())
    assert t["fp32_speedup_min"]["met"] and not t["int8_speedup_min"]["met"] and t["teacher_margin_min"]["met"]
    assert "| GLUE average |" in markdown(rows, avg)


def test_a_stopped_task_is_a_row_that_says_why_and_is_left_out_of_the_averages(tmp_path):
    from tools.bench_glue import stop_line, stopped_row

    log = tmp_path / "run.log"
    log.write_text("[search] episode 6 ...\nError: degenerate search: the 18 candidates are tied\n\n")
    fp32 = {"stopped": stop_line(log), "wall_s": 50.0, "peak_rss_gb": 1.5,
            "teacher": {"main_metric": "f1", "dev_metrics": {"f1": 0.87, "accuracy": 0.81},
                        "baseline": {"f1": 0.81, "accuracy": 0.68}}}  # fmt: skip
    stopped = stopped_row("mrpc", fp32)
    assert stopped["stopped"] == "Error: degenerate search: the 18 candidates are tied"
    assert stopped["teacher_margin"] == pytest.approx(0.06) and stopped["baseline"] == 0.81
    rows = {"a": table_row("builtin", None, *_steps(0.9, 0.88, 0.87, 0.85)), "mrpc": stopped}
    avg = averages(rows)
    assert avg["stopped"] == ["mrpc"] and avg["tasks"] == ["a"]
    assert avg["kdnas_fp32"]["retained"] == pytest.approx(0.88 / 0.9, abs=1e-4)  # the stopped task is not a zero
    t = targets(rows, avg)
    assert t["teacher_margin_min"]["value"] == pytest.approx(0.06) and not t["teacher_margin_min"]["met"]
    assert t["mrpc_fp32_over_baseline_min"] == {"value": None, "target": 0.05, "met": False}
    assert "| mrpc | f1 | 0.8100 | stopped | Error: degenerate search" in markdown(rows, avg)


def test_the_mrpc_target_is_the_smaller_margin_over_the_baseline():
    run, int8, hand, bench = _steps(0.9, 0.88, 0.87, 0.85)
    run["summary"]["baseline"] = {"accuracy": 0.5, "f1": 0.81}
    run["summary"]["student"]["dev_metrics"]["f1"] = 0.84
    rows = {"mrpc": table_row("builtin", None, run, int8, hand, bench)}
    t = targets(rows, averages(rows))["mrpc_fp32_over_baseline_min"]
    assert t["value"] == pytest.approx(0.03) and not t["met"]


def test_a_row_without_the_int8_run_says_so_and_leaves_int8_targets_unmet():
    run, _, hand, bench = _steps(0.9, 0.88, 0.87, 0.85)
    del bench["rows"]["kdnas_int8"]
    row = table_row("builtin", None, run, None, hand, bench)
    assert set(row["models"]) == {"teacher", "hand", "kdnas_fp32"} and row["not_run"] == ["kdnas_int8"]
    assert (row["wall_s"], row["peak_rss_gb"]) == (115.0, 2.0)
    rows = {"a": row}
    avg = averages(rows)
    assert avg["kdnas_int8"]["retained"] is None and avg["kdnas_fp32"]["retained"] is not None
    t = targets(rows, avg)
    assert t["int8_retained_avg"]["met"] is False and t["int8_speedup_min"]["value"] is None
    assert "kdnas_int8 | | |" in markdown(rows, avg)


def test_a_refused_int8_run_is_said_in_the_row_and_counted_in_its_cost():
    """The int8 run stopped with exit 2 (its export lost more of the dev metric than allowed): no int8 student in
    the row or the averages, the reason beside it, its wall time and memory in the task's cost."""
    run, _, hand, bench = _steps(0.9, 0.88, 0.87, 0.85)
    del bench["rows"]["kdnas_int8"]
    refused = {"stopped": "Error: the exported model loses 1.28 points of matthews_correlation", "wall_s": 40.0,
               "peak_rss_gb": 3.0, "teacher": {}}  # fmt: skip
    row = table_row("builtin", None, run, refused, hand, bench)
    assert "kdnas_int8" not in row["models"] and row["not_run"] == ["kdnas_int8"]
    assert row["int8_stopped"].startswith("Error: the exported model loses")
    assert (row["wall_s"], row["peak_rss_gb"]) == (155.0, 3.0)
    rows = {"a": row}
    avg = averages(rows)
    assert avg["kdnas_int8"]["retained"] is None
    assert "| a | accuracy | 0.5000 | kdnas_int8 | stopped | Error: the exported model loses" in markdown(rows, avg)


def test_a_row_names_the_runtime_each_model_was_timed_on():
    """The int8 student of a `backend: auto` run may be an OpenVINO export, timed on its IR: the row says so."""
    run, int8, hand, bench = _steps(0.9, 0.88, 0.87, 0.85)
    for name, r in bench["rows"].items():
        r["runtime"] = "openvino" if name == "kdnas_int8" else "onnxruntime"
    row = table_row("builtin", None, run, int8, hand, bench)
    assert row["models"]["kdnas_int8"]["runtime"] == "openvino"
    assert row["models"]["kdnas_fp32"]["runtime"] == "onnxruntime"
    rows = {"a": row}
    assert "| a | accuracy | 0.5000 | kdnas_int8 (openvino) | 0.8700 |" in markdown(rows, averages(rows))


def test_the_hand_crafted_student_gets_the_final_distillations_epochs(tmp_path):
    import json

    from tools.bench_glue import final_epochs_of

    (tmp_path / "t.yaml").write_text("search: {final_epochs: 2.0}\n")
    run = tmp_path / "run"
    assert final_epochs_of(tmp_path, "t", run) == 2.0  # no search summary: the config's
    (run / "search").mkdir(parents=True)
    (run / "search" / "summary.json").write_text(json.dumps({"final": {"winner": {"final_epochs": 8.33}}}))
    assert final_epochs_of(tmp_path, "t", run) == 8.33  # raised by final_min_steps on a small task


def test_a_resumed_run_counts_the_seconds_of_its_reused_stages(tmp_path):
    import json

    from tools.bench_glue import stage_seconds

    assert stage_seconds(tmp_path) == 0.0
    (tmp_path / "stages").mkdir()
    for name, s in (("search", 698.0), ("export-student", 30.5)):
        (tmp_path / "stages" / f"{name}.json").write_text(json.dumps({"stage": name, "seconds": s}))
    (tmp_path / "stages" / "broken.json").write_text("{")
    assert stage_seconds(tmp_path) == 728.5


def test_the_speedup_is_the_benchs_paired_ratio_when_it_has_one():
    run, int8, hand, bench = _steps(0.9, 0.88, 0.87, 0.85)
    bench["rows"]["kdnas_fp32"].update(speedup_paired=3.2, speedup_paired_p10=3.1, speedup_paired_p90=3.3)
    s = table_row("builtin", None, run, int8, hand, bench)["models"]["kdnas_fp32"]
    assert (s["speedup_vs_onnx_teacher"], s["speedup_vs_onnx_teacher_p10_p90"], s["speedup_of_medians"]) == (
        3.2, [3.1, 3.3], 3.6)


def test_a_redone_step_redoes_the_steps_that_use_it_and_nothing_else():
    from tools.bench_glue import redo_steps

    assert redo_steps("fp32") == {"fp32", "int8", "hand", "bench"}  # a new teacher and student: all stale
    assert redo_steps("int8") == {"int8", "bench"}  # the hand-crafted student does not use the int8 run
    assert redo_steps("bench") == {"bench"} and redo_steps("") == set()
    with pytest.raises(SystemExit, match="unknown step"):
        redo_steps("fp32,tune")


def _bench(tmp_path, redo=""):
    import argparse

    from tools.bench_glue import Bench

    args = argparse.Namespace(quick=False, redo=redo, skip="", data_dir=str(tmp_path), work=tmp_path / "work",
                              results=tmp_path / "glue.json", headroom=None)  # fmt: skip
    return Bench(args)


def test_a_redone_step_keeps_the_earlier_result_on_record(tmp_path):
    _bench(tmp_path).step("t", "hand", lambda: {"arch": "L=1"})
    b = _bench(tmp_path, redo="hand")
    assert b.step("t", "hand", lambda: {"arch": "L=2"})["arch"] == "L=2"
    assert b.step("t", "fp32", lambda: {"run": "r"})["run"] == "r"
    saved = __import__("json").loads((tmp_path / "glue.json").read_text())["tasks"]["t"]
    assert saved["steps"]["hand"]["arch"] == "L=2" and [h["arch"] for h in saved["history"]["hand"]] == ["L=1"]
    assert "fp32" not in saved["history"]  # a first run has nothing earlier to keep


def test_a_disturbed_bench_window_is_timed_again_and_the_quietest_is_kept(tmp_path, monkeypatch):
    """First window: the fp32 student stalls (p90 2.6x its p10); the second is quiet and ends the retries."""
    import json

    import tools.bench_glue as bg

    spreads = iter([[1.05, 1.1, 1.06, 2.6], [1.05, 1.08, 1.06, 1.07], [9.0] * 4])

    def fake_run(cmd, log=None):
        out = cmd[cmd.index("--json") + 1]
        rows = [{"median_ms": 2.0, "p10_ms": 1.0, "p90_ms": s, "p90_over_p10": s, "disturbed": s > 1.5}
                for s in next(spreads)]  # fmt: skip
        Path(out).write_text(json.dumps(rows))
        return 0, 0.1, 1.5

    monkeypatch.setattr(bg, "run_tracked", fake_run)
    b = _bench(tmp_path)
    s32 = {"summary": {"teacher_onnx": "t-onnx", "teacher": {"path": "t"}, "student": {"onnx": "s"},
                       "tables": {"cpu": "table.json"}}}  # fmt: skip
    (b.work / "t").mkdir(parents=True)
    out = b.bench("t", s32, None, {"onnx": "h"})
    assert [a["disturbed"] for a in out["attempts"]] == [True, False] and out["seconds"] == 3.0
    assert out["rows"]["kdnas_fp32"]["p90_over_p10"] == 1.07


def test_the_markdown_lists_published_6_layer_figures_and_says_where_none_were_found():
    rows = {"sst2": table_row("builtin", None, *_steps(0.9, 0.88, 0.87, 0.85)), "stsb": {
        "stopped": "Error: x", "metric": "pearson", "baseline": 0.0, "teacher_margin": None}}
    text = markdown(rows, averages(rows))
    assert "| sst2 | MiniLM 6x384 | 0.913 | https://huggingface.co/microsoft/xtremedistil" in text
    assert "| stsb | none found | - | - |" in text


def test_headroom_overrides_every_device_of_the_generated_configs(tmp_path):
    import argparse

    import yaml

    from tools.bench_glue import headroom_arg

    assert headroom_arg("auto") == "auto" and headroom_arg("0.05") == 0.05
    for bad in ("1", "-0.1", "nan", "fast"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected auto or a number"):
            headroom_arg(bad)
    b = _bench(tmp_path)
    b.headroom = "auto"
    cfg = yaml.safe_load(b.config("sst2", "int8", "teacher-dir").read_text())
    assert [d["headroom"] for d in cfg["devices"]] == ["auto"] and cfg["teacher"]["path"] == "teacher-dir"
    assert cfg["task"]["data_dir"] == str(tmp_path)
