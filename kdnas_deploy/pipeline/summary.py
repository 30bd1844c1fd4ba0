"""What ``run`` leaves at the end: ``summary.json``, the predicted-vs-measured plot and the report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.io import atomic_write_json
from kdnas_deploy.latency.headroom import validation_report
from kdnas_deploy.pipeline.report import ModelRow, Report, write_report
from kdnas_deploy.tasks.baselines import retained_gains

SUMMARY_SCHEMA_VERSION = 1


def plot_latency_check(path: Path, rows: list[dict[str, Any]], validation: dict[str, Any] | None,
                       budget_ms: float) -> Path:
    """Predicted against measured latency: the table's validation points and this run's models."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5))  # the object API: no pyplot, no global backend switch
    ax = fig.subplots()
    values = []
    if validation and validation.get("points"):
        pts = [(p["predicted_ms"], p["measured_ms"]) for p in validation["points"]]
        ax.scatter(*zip(*pts, strict=True), s=14, color="0.6", label="table validation (held-out models)")
        values += [v for p in pts for v in p]
    for row in rows:
        if row.get("predicted_ms") is None:
            continue
        ax.scatter(row["predicted_ms"], row["median_ms"], s=60, marker="*", label=row["label"])
        values += [row["predicted_ms"], row["median_ms"]]
    if values:
        lo, hi = min(values) * 0.85, max(values) * 1.15
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="green", alpha=0.1, label="±10%")
        ax.axvline(budget_ms, color="red", ls="--", lw=0.8, label=f"budget {budget_ms:.2f} ms")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("measured latency (ms)")
    ax.set_title("Latency: predicted vs measured")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def machine_anchor(bench: dict[str, Any]) -> dict[str, Any]:
    """The bench's re-anchoring decision (:func:`kdnas_deploy.latency.anchor.anchor_decision`, stored by
    ``recalibrate`` as the anchored table's ``calibration.anchor``) with the one statement run prints about it."""
    anchor = bench.get("anchor")
    if anchor is None and bench.get("anchored_table") and Path(bench["anchored_table"]).is_file():
        cal = json.loads(Path(bench["anchored_table"]).read_text(encoding="utf-8")).get("calibration") or {}
        anchor = cal.get("anchor")
    if anchor is None:  # a bench recorded before re-anchoring decisions: its probe scale, as it was applied
        scale = float(bench.get("probe_scale") or 1.0)
        anchor = {"factor": scale, "measured_factor": scale, "applied": scale != 1.0, "noise_floor_pct": None,
                  "reason": "applied: recorded before re-anchoring decisions" if scale != 1.0 else "not applied"}
    keep = ("factor", "measured_factor", "applied", "noise_floor_pct", "reason")
    out = {k: anchor.get(k) for k in keep}
    out["measured_factor"] = out["measured_factor"] if out["measured_factor"] is not None else out["factor"]
    out["statement"] = anchor_statement(out)
    return out


def anchor_statement(anchor: dict[str, Any]) -> str:
    """``probe factor 1.0120: within noise: not applied`` or ``machine 1.50x slower now per the probe
    (factor 1.5000, applied to the predictions)``: the figure the probe's own log line gives."""
    if not anchor["applied"]:
        floor = anchor.get("noise_floor_pct")
        noise = f" (noise floor {floor:.2f}%)" if floor is not None else ""
        return f"probe factor {anchor['measured_factor']:.4f}: within noise: not applied{noise}"
    f = float(anchor["factor"])
    pace = f"{f:.2f}x slower" if f >= 1 else f"{1 / f:.2f}x faster"
    return f"machine {pace} now per the probe (factor {f:.4f}, applied to the predictions)"


def anchored_prediction(row: dict[str, Any], factor: float) -> float | None:
    """The table's raw prediction for a bench row rescaled by the one anchor factor (its own value if no raw)."""
    raw = row.get("predicted_raw_ms")
    return round(float(raw) * factor, 4) if raw is not None else row.get("predicted_ms")


def budget_verdict(summary: dict[str, Any], anchor_statement: str, measured_anchored: float) -> str:
    """``meets the budget`` / ``MISSES the budget as measured now, but meets it at the table's machine state``."""
    if summary["meets_budget_measured"]:
        return "meets the budget"
    if summary["meets_budget_at_table_state"]:
        return (f"MISSES the budget as measured now, but meets it at the table's machine state ({anchor_statement}:"
                f" {measured_anchored:.3f} ms)")  # fmt: skip
    return "MISSES the budget"


def baseline_facts(teacher: dict[str, Any], student: dict[str, float], search: dict[str, Any]) -> dict[str, Any]:
    """``baseline`` (the dev split's trivial baseline), ``retained_gain`` of the main metric over it,
    ``retained_gain_by_metric``, ``weak_teacher`` and the search's ``degenerate`` verdict, for summary.json."""
    baseline = {k: float(v) for k, v in (teacher.get("baseline") or {}).items()}
    gains = retained_gains(student, teacher["dev_metrics"], baseline)
    return {
        "baseline": baseline,
        "retained_gain": _round(gains.get(teacher["main_metric"])),
        "retained_gain_by_metric": {k: _round(v) for k, v in gains.items()},
        "weak_teacher": teacher.get("weak_teacher"),
        "degenerate": search.get("degenerate"),
        "escalation": search.get("escalation"),
        "proxy_plan": search.get("proxy_plan"),
        "teacher_recipe": teacher.get("recipe") or None,
        "max_seq_len": teacher.get("max_seq_len"),
    }


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def honesty_lines(summary: dict[str, Any], metric: str) -> list[tuple[str, str]]:
    """The report's lines on the baseline, the retained gain, a weak teacher and a degenerate search."""
    lines = []
    if summary["baseline"].get(metric) is not None:
        lines.append(("Trivial baseline", f"{metric} {summary['baseline'][metric]:.4f} (best constant prediction)"))
        gain = summary["retained_gain"]
        lines.append(("Retained gain over the baseline", "n/a (the teacher does not beat the baseline)"
                      if gain is None else f"{gain} of (teacher - baseline)"))  # fmt: skip
    weak = summary.get("weak_teacher") or {}
    if weak.get("weak"):
        lines.append(("WARNING: weak teacher", f"{metric} {weak['teacher']:.4f} is within {weak['margin']:g} of "
                      f"the baseline {weak['baseline']:.4f} (run with teacher.allow_weak)"))  # fmt: skip
    plan = summary.get("proxy_plan")
    if plan:
        lines.append(("Proxy plan", f"{plan['proxy']} of {plan['train']} train rows, {plan['steps']} steps per "
                      f"candidate, held-out {plan['heldout']} rows (standard error <= {plan['heldout_se_max']:.4f})"))
    escalation = summary.get("escalation")
    if escalation:
        lines.append(("Proxy budget raised", f"x{escalation['scale']:g} after a degenerate search "
                      f"({escalation['first']['reason']}); the re-evaluated candidates were ranked"))
    degenerate = summary.get("degenerate")
    if degenerate:
        lines.append(("WARNING: degenerate search", str(degenerate.get("reason"))))
    return lines


@dataclass(frozen=True)
class RunFacts:
    """What the summary needs to know about the run itself (plain data, not the pipeline object)."""

    run_dir: Path
    task: str
    devices: list[str]
    headroom: dict[str, float]
    stages: dict[str, dict[str, Any]]
    seq: dict[str, Any] | None = None  # the length priced at (kdnas_deploy.pipeline.seq.seq_facts)
    bench_check: str = "model"  # the figure the budget is checked on: model | end_to_end (bench.check)


def write_outputs(facts: RunFacts, tables: dict[str, str], budgets: list[tuple[str, float]], teacher: dict[str, Any],
                  teacher_arch: Architecture, search: dict[str, Any], bench: dict[str, Any],
                  echo: Callable[[str], None] = print,
                  device_results: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """summary.json, the plot and the report. ``bench`` is the first device's (the headline figures);
    ``device_results`` holds every device's own (:func:`kdnas_deploy.pipeline.per_device.device_result`)."""
    run_dir = facts.run_dir
    student_arch = Architecture.from_dict(search["winner"]["arch"])
    metric = teacher["main_metric"]
    teacher_row, student_row = bench["rows"][0], bench["rows"][1]
    teacher_row["label"], student_row["label"] = "teacher (ONNX)", "student (ONNX)"
    student_metrics = {k: float(v) for k, v in (search["winner"].get("dev_metrics") or {}).items()
                       if isinstance(v, int | float)}
    budget_ms = budgets[0][1]
    measured = student_row["median_ms"]
    speedup = teacher_row["median_ms"] / measured
    # One figure for the machine's speed now: the bench's probe re-anchoring decision. Predictions are rescaled
    # by it, and the measured latency brought back to the table's machine state, only when it was applied.
    anchor = machine_anchor(bench)
    drift = anchor["factor"] if anchor["applied"] else 1.0
    for row in (teacher_row, student_row):
        row["predicted_ms"] = anchored_prediction(row, drift)
    e2e = bench.get("e2e")
    check = budget_check(facts.bench_check, e2e, measured, drift, budget_ms)
    measured_anchored = measured / drift
    devices = facts.devices
    summary = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "run_dir": str(run_dir),
        "task": facts.task,
        "budgets_ms": {name: b for name, (_, b) in zip(devices, budgets, strict=True)},
        "headroom": facts.headroom,
        "tables": tables,
        "teacher": {"path": teacher["teacher"], "arch": teacher_arch.short(),
                    "params": teacher_arch.num_parameters(), "dev_metrics": teacher["dev_metrics"],
                    "predicted_ms": teacher_row.get("predicted_ms"), "measured_ms": teacher_row["median_ms"],
                    "predicted_raw_ms": teacher_row.get("predicted_raw_ms")},
        "student": {"path": search["student"], "onnx": student_row["path"], "arch": student_arch.short(),
                    "params": student_arch.num_parameters(), "dev_metrics": student_metrics,
                    "predicted_ms": student_row.get("predicted_ms"), "measured_ms": measured,
                    "predicted_raw_ms": student_row.get("predicted_raw_ms"),
                    "measured_at_table_state_ms": round(measured_anchored, 4)},
        "machine_drift_factor": round(drift, 4),
        "machine_anchor": anchor,
        "speedup": round(speedup, 3),
        "metric_retained": (round(student_metrics[metric] / teacher["dev_metrics"][metric], 4)
                            if metric in student_metrics and teacher["dev_metrics"].get(metric) else None),
        **check,
        **baseline_facts(teacher, student_metrics, search),
        "bench": bench["bench"],
        **device_facts(device_results),
        "seq": facts.seq,
        "stages": facts.stages,
    }
    figure = plot_latency_check(run_dir / "latency_check.png", [teacher_row, student_row],
                                validation_report(tables[devices[0]]), budget_ms)
    rows = _model_rows(summary, metric, teacher_arch, student_arch, teacher["dev_metrics"], speedup)
    verdict = budget_verdict(summary, anchor["statement"], check["checked_ms"] / drift)
    report = Report(
        title=f"kdnas-deploy run: {facts.task}",
        budgets=[(name, b) for name, (_, b) in zip(devices, budgets, strict=True)],
        chosen_arch=student_arch.short(),
        rows=rows,
        figures=[("Search: proxy metric against predicted latency, Pareto front",
                  Path(search["run"]) / "search.png"), ("Latency: predicted against measured", figure)],
        facts=[*_latency_facts(measured, devices[0], verdict, e2e, check["budget_checked_on"]),
               *device_report_lines(device_results or []),
               ("Machine speed now (probe)", anchor["statement"]),
               ("Metric retained", f"{summary['metric_retained']}"),
               *([("Sequence length priced", _seq_text(facts.seq))] if facts.seq else []),
               *honesty_lines(summary, metric),
               ("Latency tables", ", ".join(f"{n}: {t}" for n, t in tables.items()))],
    )
    md, page = write_report(report, run_dir)
    summary["report"] = {"markdown": str(md), "html": str(page)}
    atomic_write_json(run_dir / "summary.json", summary)
    _echo_outcome(echo, f"student {student_arch.short()}: {measured:.3f} ms measured", check, budget_ms,
                  f"{verdict}), {speedup:.2f}x faster than the teacher; report: {page}", device_results)
    return summary


def _echo_outcome(echo: Callable[[str], None], head: str, check: dict[str, Any], budget_ms: float, tail: str,
                  device_results: list[dict[str, Any]] | None) -> None:  # fmt: skip
    """The run's last lines: the headline student against the first budget, then each further device's."""
    e2e_note = f", end-to-end p50 {check['checked_ms']:.3f} ms" if check["budget_checked_on"] == "end_to_end" else ""
    echo(f"{head}{e2e_note} (budget {budget_ms:.3f} ms: {tail}")
    for name, line in device_lines(device_results[1:]) if device_results else []:
        echo(f"{name}: {line}")


def _model_rows(summary: dict[str, Any], metric: str, teacher_arch: Architecture, student_arch: Architecture,
                teacher_metrics: dict[str, Any], speedup: float) -> list[ModelRow]:  # fmt: skip
    """The report's table: teacher, student and (when known) the task's trivial baseline."""
    t, st = summary["teacher"], summary["student"]
    rows = [
        ModelRow("teacher", teacher_arch.short(), teacher_arch.num_parameters() / 1e6, metric,
                 teacher_metrics.get(metric), t.get("predicted_ms"), t["measured_ms"], 1.0),
        ModelRow("student", student_arch.short(), student_arch.num_parameters() / 1e6, metric,
                 st["dev_metrics"].get(metric), st.get("predicted_ms"), st["measured_ms"], speedup),
    ]  # fmt: skip
    if summary["baseline"].get(metric) is not None:
        rows.append(ModelRow("trivial baseline", "constant prediction", 0.0, metric, summary["baseline"][metric],
                             None, None, None))  # fmt: skip
    return rows


def _seq_text(facts: dict[str, Any]) -> str:
    from kdnas_deploy.pipeline.seq import seq_line

    return seq_line(facts)


def device_facts(devices: list[dict[str, Any]] | None) -> dict[str, Any]:
    """``devices`` (each device's artifact against its own budget) and whether every measured budget is met."""
    measured = [d for d in devices or [] if d["measured"]]
    return {"devices": devices or [],
            "meets_every_budget_measured": all(d["meets_budget_measured"] for d in measured) if measured else None}


def device_report_lines(results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The report's device lines: one per device when there are several, and what ``backend: auto`` picked."""
    lines = device_lines(results) if len(results) > 1 else []
    for r in results:
        pick = r.get("backend_pick")
        if pick:
            from kdnas_deploy.latency.pick import BackendPick

            picked = BackendPick.from_dict(pick)
            timed = picked.timed()
            lines.append((f"Backend picked for {r['name']} (auto)",
                          f"{pick['chosen']}" + (f" ({picked.basis()}: {timed})" if timed else "")))
    return lines


def device_lines(results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The report's line per device: its artifact's measured latency against its own budget."""
    lines = []
    for r in results:
        if not r["measured"]:
            lines.append((f"Device {r['name']}", f"not measured on this machine ({r['reason']}); budget "
                          f"{r['budget_ms']:.3f} ms met by prediction only"))  # fmt: skip
            continue
        verdict = "meets" if r["meets_budget_measured"] else "MISSES"
        on = " end to end" if r["budget_checked_on"] == "end_to_end" else ""
        lines.append((f"Device {r['name']} ({r['precision']})",
                      f"{r['checked_ms']:.3f} ms measured{on}, predicted {r['predicted_ms']}: {verdict} its budget "
                      f"{r['budget_ms']:.3f} ms; {r['speedup_vs_teacher_fp32']:.2f}x the fp32 teacher"))  # fmt: skip
    return lines


E2E_KEYS = ("task", "requests", "e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms", "tokenize_p50_ms", "model_p50_ms",
            "requests_per_s", "length_p50", "length_p95")


def budget_check(bench_check: str, e2e: dict[str, Any] | None, measured: float, drift: float,
                 budget_ms: float) -> dict[str, Any]:  # fmt: skip
    """The summary's budget fields, on the figure ``bench.check`` names (the fixed-shape median for ``model``, or
    when the bench has no end-to-end row; the end-to-end p50 for ``end_to_end``)."""
    on = "end_to_end" if bench_check == "end_to_end" and e2e else "model"
    checked = float(e2e["e2e_p50_ms"]) if on == "end_to_end" and e2e else measured
    return {"budget_checked_on": on, "checked_ms": round(checked, 4),
            "meets_budget_measured": bool(checked <= budget_ms),
            "meets_budget_at_table_state": bool(checked / drift <= budget_ms),
            "student_end_to_end": {k: e2e.get(k) for k in E2E_KEYS} if e2e else None}  # fmt: skip


def _latency_facts(measured: float, device: str, verdict: str, e2e: dict[str, Any] | None,
                   checked_on: str) -> list[tuple[str, str]]:  # fmt: skip
    line = f"{measured:.3f} ms on {device}" + (f": {verdict}" if checked_on == "model" else "")
    out = [("Measured student latency", line)]
    if e2e:
        out.append(("Student end to end", _e2e_text(e2e, checked_on, verdict)))
    return out


def _e2e_text(row: dict[str, Any], checked_on: str, verdict: str) -> str:
    text = (f"p50 {row['e2e_p50_ms']:.3f} ms, p99 {row['e2e_p99_ms']:.3f} ms per request ({row['requests']} "
            f"{row['task']} dev texts, median {row['length_p50']} tokens; tokenizer {row['tokenize_p50_ms']:.3f} ms, "
            f"model {row['model_p50_ms']:.3f} ms at p50)")  # fmt: skip
    return text + (f": {verdict} (bench.check: end_to_end)" if checked_on == "end_to_end" else "")
