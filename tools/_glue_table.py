"""Issue 15's table arithmetic for ``tools/bench_glue.py``: one task's row from its steps' results (retained ratio
and gain over the trivial baseline, speedups over both teachers), the GLUE average and the issue's targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools._glue_report import students

TARGETS = {"fp32_retained_avg_min": 0.97, "fp32_retained_each_min": 0.95, "fp32_speedup_min": 3.2,
           "fp32_retained_gain_avg_min": 0.90, "fp32_over_hand_points_min": 1.0, "int8_retained_avg_min": 0.96,
           "int8_speedup_min": 6.0, "teacher_margin_min": 0.10, "task_wall_s_max": 3600.0,
           "task_peak_rss_gb_max": 4.0, "mrpc_over_baseline_min": 0.05}  # fmt: skip

def stopped_row(task: str, fp32: dict[str, Any]) -> dict[str, Any]:
    """The row of a task whose fp32 run refused to crown a student (exit 2): why, the teacher, its baseline."""
    t = fp32.get("teacher") or {}
    main, dev, base = t.get("main_metric"), t.get("dev_metrics") or {}, t.get("baseline") or {}
    margin = round(dev[main] - base[main], 4) if main in dev and main in base else None
    return {"stopped": fp32["stopped"], "metric": main, "baseline": base.get(main), "teacher_metrics": dev,
            "teacher_margin": margin, "wall_s": fp32["wall_s"], "peak_rss_gb": fp32["peak_rss_gb"]}  # fmt: skip


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def _spread(row: dict[str, Any]) -> list[float] | None:
    lo, hi = row.get("speedup_paired_p10"), row.get("speedup_paired_p90")
    return None if lo is None or hi is None else [lo, hi]


def _gain(student: float | None, teacher: float, baseline: float) -> float | None:
    return round((student - baseline) / (teacher - baseline), 4) if student is not None and teacher > baseline else None


def table_row(task: str, data_dir: Path, fp32: dict[str, Any], int8: dict[str, Any] | None, hand: dict[str, Any],
              bench: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One task's row of the table from its steps' results (the int8 student: its int8 graph's dev metric)."""
    from kdnas_deploy.tasks import get_task

    s32 = fp32["summary"]
    main = get_task(task, data_dir).main_metric
    teacher = float(s32["teacher"]["dev_metrics"][main])
    base = float(s32["baseline"][main])
    t_onnx, t_pt = bench["rows"]["teacher_onnx"]["median_ms"], bench["rows"]["teacher_pytorch"]["median_ms"]
    models = {"teacher": (s32["teacher"]["dev_metrics"], s32["teacher"]["params"], "teacher_onnx"),
              "hand": (hand["dev_metrics"], hand["params"], "hand"),
              "kdnas_fp32": (s32["student"]["dev_metrics"], s32["student"]["params"], "kdnas_fp32")}  # fmt: skip
    stopped8 = int8 is not None and "stopped" in int8  # refused (e.g. its export lost more than the metric allows)
    if int8 is not None and not stopped8:  # the int8 student: its int8 graph's dev metric
        s8 = int8["summary"]["student"]
        models["kdnas_int8"] = ({**s8["dev_metrics"], **s8.get("onnx_dev_metrics", {})}, s8["params"], "kdnas_int8")
    row: dict[str, Any] = {"metric": main, "baseline": base, "baselines": dict(s32["baseline"]), "models": {}}
    for name, (metrics, params, key) in models.items():
        value = metrics.get(main)
        measured = bench["rows"][key]["median_ms"]
        predicted = bench["rows"][key]["predicted_ms"]  # the bench prices with the fp32 table only
        if predicted is None and name == "kdnas_int8":  # the int8 student: its own run's int8 table, unanchored
            predicted = int8["summary"]["student"].get("predicted_raw_ms")
        row["models"][name] = {
            "metrics": metrics, "params": params, "predicted_ms": predicted,
            "measured_ms": measured, "runtime": bench["rows"][key].get("runtime"),
            "speedup_vs_onnx_teacher": bench["rows"][key].get("speedup_paired") or _ratio(t_onnx, measured),
            "speedup_vs_onnx_teacher_p10_p90": _spread(bench["rows"][key]),
            "speedup_of_medians": _ratio(t_onnx, measured),
            "speedup_vs_pytorch_teacher": _ratio(t_pt, measured), "retained": _ratio(value, teacher),
            "retained_gain": _gain(value, teacher, base)}  # fmt: skip
    runs = [fp32] + ([int8] if int8 is not None else [])
    row["wall_s"] = round(sum(r["wall_s"] for r in runs) + hand["seconds"] + bench["seconds"], 1)
    row["peak_rss_gb"] = max(r["peak_rss_gb"] for r in runs)
    if int8 is None or stopped8:
        row["not_run"] = ["kdnas_int8"]
    if stopped8:
        row["int8_stopped"] = int8["stopped"]
    row["teacher_margin"] = round(teacher - base, 4)
    return row


def _mrpc_margin(row: dict[str, Any]) -> float | None:
    """The fp32 student's smaller margin over the trivial baseline across MRPC's metrics (None: no student)."""
    if "stopped" in row:
        return None
    metrics, base = row["models"]["kdnas_fp32"]["metrics"], row.get("baselines") or {}
    gaps = [metrics[k] - base[k] for k in base if k in metrics]
    return round(min(gaps), 4) if gaps else None


def averages(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Averages over the tasks that have students (a stopped task has none: it is listed in ``stopped``)."""
    stopped = sorted(task for task, r in rows.items() if "stopped" in r)
    rows = students(rows)

    def avg(model: str, key: str) -> float | None:
        vals = [r["models"][model][key] for r in rows.values()
                if model in r["models"] and r["models"][model][key] is not None]  # fmt: skip
        return round(sum(vals) / len(vals), 4) if vals else None

    out = {m: {k: avg(m, k) for k in ("retained", "retained_gain", "speedup_vs_onnx_teacher",
                                      "speedup_vs_pytorch_teacher")} for m in ("hand", "kdnas_fp32", "kdnas_int8")}
    diffs = [100 * (r["models"]["kdnas_fp32"]["metrics"][r["metric"]] - r["models"]["hand"]["metrics"][r["metric"]])
             for r in rows.values() if r["metric"] in r["models"]["hand"]["metrics"]]  # fmt: skip
    out["kdnas_fp32_over_hand_points"] = round(sum(diffs) / len(diffs), 2) if diffs else None
    out["tasks"], out["stopped"] = sorted(rows), stopped
    return out


def targets(rows: dict[str, dict[str, Any]], avg: dict[str, Any]) -> dict[str, Any]:
    def t(value: float | None, target: float, high: bool = True) -> dict[str, Any]:
        met = value is not None and (value >= target if high else value <= target)
        return {"value": value, "target": target, "met": met}

    every = rows  # teacher margins, wall time and memory of every task, stopped or not
    rows = students(rows)
    fp32 = [r["models"]["kdnas_fp32"] for r in rows.values()]
    int8 = [r["models"]["kdnas_int8"] for r in rows.values() if "kdnas_int8" in r["models"]]
    each = min((m["retained"] for m in fp32 if m["retained"] is not None), default=None)
    return {
        "fp32_retained_avg": t(avg["kdnas_fp32"]["retained"], TARGETS["fp32_retained_avg_min"]),
        "fp32_retained_each_min": t(each, TARGETS["fp32_retained_each_min"]),
        "fp32_speedup_min": t(min((m["speedup_vs_onnx_teacher"] or 0 for m in fp32), default=None),
                              TARGETS["fp32_speedup_min"]),
        "fp32_retained_gain_avg": t(avg["kdnas_fp32"]["retained_gain"], TARGETS["fp32_retained_gain_avg_min"]),
        "fp32_over_hand_points_avg": t(avg["kdnas_fp32_over_hand_points"], TARGETS["fp32_over_hand_points_min"]),
        "int8_retained_avg": t(avg["kdnas_int8"]["retained"], TARGETS["int8_retained_avg_min"]),
        "int8_speedup_min": t(min((m["speedup_vs_onnx_teacher"] or 0 for m in int8), default=None),
                              TARGETS["int8_speedup_min"]),
        "teacher_margin_min": t(min((r["teacher_margin"] for r in every.values()
                                     if r["teacher_margin"] is not None), default=None),
                                TARGETS["teacher_margin_min"]),  # fmt: skip
        "task_wall_s_max": t(max((r["wall_s"] for r in every.values()), default=None), TARGETS["task_wall_s_max"],
                             high=False),
        "task_peak_rss_gb_max": t(max((r["peak_rss_gb"] for r in every.values()), default=None),
                                  TARGETS["task_peak_rss_gb_max"], high=False),
        **({"mrpc_fp32_over_baseline_min": t(_mrpc_margin(every["mrpc"]), TARGETS["mrpc_over_baseline_min"])}
           if "mrpc" in every else {}),  # F1 and accuracy over always-"paraphrase"
    }  # fmt: skip
