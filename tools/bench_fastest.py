"""Benchmark of issue 18's fastest-path targets on this CPU; writes tools/results/fastest_path.json (+ .png).

1. ``run``    ``kdnas-deploy run configs/sst2-fastest.yaml`` (every device on its fastest backend, ``backend:
              auto``; budgets a third of the teacher on the same path): wall time and peak RSS; a rerun resumes.
2. ``peers``  ``bench --peers`` of the run's teacher and student (every runtime, interleaved), the headline
              deploying the student's precisions whose export passed its dev-metric check in the run.
3. targets    (a) the student on its chosen path >= 2x the same student on ORT fp32 O2, losing <= 0.5 points of
              the dev metric on that path (bf16 CPUs); (b) the student >= 3x the teacher on the teacher's fastest
              runtime, retaining >= 97% of the teacher's dev metric on the deployed path.

    python -m tools.bench_fastest                                  # ~40-60 min on 2 cores, a quiet machine
    python -m tools.bench_fastest --config configs/quickstart.yaml --work work_artifacts/fastest-quick --quick
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kdnas_deploy.io import atomic_write_json
from tools._common import RESULTS, ROOT, WORK, kdnas_cli, run_tracked, shown

TARGETS = {"path_vs_ort_fp32": 2.0, "max_metric_loss_points": 0.5, "vs_teacher_fastest": 3.0, "retained": 0.97}


def step_run(config: Path, run_dir: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """The pipeline run (resumed when its folder exists); its summary."""
    if not (run_dir / "summary.json").is_file() or "run" not in doc:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(run_dir.parent / "run.log", "a", encoding="utf-8") as log:
            rc, peak, wall = run_tracked(kdnas_cli("run", str(config), "--out", str(run_dir), "--no-progress"), log)
        if rc != 0:
            raise SystemExit(f"kdnas-deploy run exited {rc} (log: {shown(run_dir.parent / 'run.log')})")
        doc["run"] = {"command": f"kdnas-deploy run {shown(config)} --out {shown(run_dir)}", "seconds": round(wall, 1),
                      "peak_rss_gb": round(peak, 3)}  # fmt: skip
    return json.loads((run_dir / "summary.json").read_text())


def device_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per device: backend picked, precision, budget and measured latency, and the export's dev-metric check."""
    rows = []
    for dev in summary.get("devices") or []:
        row = {k: dev.get(k) for k in ("name", "backend", "precision", "budget_ms", "measured_ms", "predicted_ms",
                                       "meets_budget_measured", "speedup_vs_teacher_fp32")}  # fmt: skip
        pick = dev.get("backend_pick") or {}
        row["picked"] = pick.get("chosen") or dev.get("backend")
        report = Path(dev["onnx"]) / "export_report.json" if dev.get("onnx") else None
        check = json.loads(report.read_text()).get("metric_check") or {} if report and report.is_file() else {}
        keep = ("metric", "before", "after", "drop_points", "ok")
        row["metric_check"] = {k: check.get(k) for k in keep if k in check}
        if check.get("before") is not None and check.get("after") is not None:
            row["metric_loss_points"] = round(100.0 * (float(check["before"]) - float(check["after"])), 3)
        row["onnx"] = shown(Path(dev["onnx"])) if dev.get("onnx") else None
        rows.append(row)
    return rows


def deployable(devices: list[dict[str, Any]]) -> list[str]:
    """fp32 always; a lossy precision only where its export in the run passed the dev-metric check."""
    ok = {d["precision"] for d in devices if d.get("metric_check", {}).get("ok")}
    return ["fp32", *sorted(p for p in ok if p in ("bf16", "int8"))]


def targets(doc: dict[str, Any]) -> dict[str, Any]:
    """The issue's two fastest-path targets, from the peers headline and the run's metric checks."""
    peers, teacher_metric = doc["peers"], doc["teacher"]["dev_metric"]
    label = peers["headline"]["deployed_student"]  # e.g. student/openvino-int8
    precision = label.rsplit("-", 1)[-1]
    dev = next((d for d in doc["devices"] if d["precision"] == precision), None)
    after = (dev or {}).get("metric_check", {}).get("after")
    loss = (dev or {}).get("metric_loss_points", 0.0 if precision == "fp32" else None)
    deployed_metric = float(after) if after is not None else doc["student"]["dev_metric"]
    path = peers["targets"]["student_path_vs_student_ort_fp32"]["value"]
    fastest = peers["targets"]["student_vs_teacher_fastest"]["value"]
    retained = deployed_metric / teacher_metric if teacher_metric else None
    return {
        "student_path_vs_student_ort_fp32": {
            "value": path, "target": TARGETS["path_vs_ort_fp32"], "metric_loss_points": loss,
            "max_metric_loss_points": TARGETS["max_metric_loss_points"], "path": label,
            "met": path >= TARGETS["path_vs_ort_fp32"] and loss is not None
            and loss <= TARGETS["max_metric_loss_points"]},
        "student_vs_teacher_fastest": {
            "value": fastest, "target": TARGETS["vs_teacher_fastest"], "teacher_fastest":
            peers["headline"]["teacher_fastest"], "retained": None if retained is None else round(retained, 4),
            "retained_target": TARGETS["retained"],
            "met": fastest >= TARGETS["vs_teacher_fastest"] and retained is not None
            and retained >= TARGETS["retained"]},
    }  # fmt: skip


def plot(doc: dict[str, Any], path: Path) -> None:
    """Median latency of every peer row, teacher and student, the deployed path and the teacher's fastest marked."""
    from matplotlib.figure import Figure

    rows = [r for r in doc["peers"]["rows"] if r.get("median_ms") and r["kind"] != "plain"]
    fig = Figure(figsize=(7, 0.35 * len(rows) + 1.2))
    ax = fig.subplots()
    head = doc["peers"]["headline"]
    colors = ["tab:red" if r["label"] in (head["deployed_student"], head["teacher_fastest"])
              else "tab:blue" if r["role"] == "student" else "0.6" for r in rows]  # fmt: skip
    ax.barh([r["label"] for r in rows], [r["median_ms"] for r in rows], color=colors)
    ax.invert_yaxis()
    ax.set_xlabel("median latency (ms), b1 s128, 2 threads")
    ax.set_title(f"{head['deployed_student']}: {head['speedup_vs_teacher_fastest']:.2f}x the teacher's fastest "
                 f"({head['teacher_fastest']})", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    from kdnas_deploy.export.bench import BenchConfig
    from kdnas_deploy.export.peers import format_peers, quick_config, run_peers

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "sst2-fastest.yaml")
    ap.add_argument("--work", type=Path, default=WORK / "fastest")
    ap.add_argument("--out", type=Path, default=RESULTS / "fastest_path.json")
    ap.add_argument("--rounds", type=int, default=20, help="Interleaved rounds of the peers bench.")
    ap.add_argument("--quick", action="store_true", help="A seconds-long peers bench (timings meaningless).")
    args = ap.parse_args(argv)
    doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    summary = step_run(args.config, args.work / "run", doc)
    devices = device_rows(summary)
    checked = [d["metric_check"]["metric"] for d in devices if d["metric_check"].get("metric")]
    metric = checked[0] if checked else next(iter(summary["teacher"]["dev_metrics"]))  # the task's main metric
    doc.update(schema_version=1, config=shown(args.config), task=summary["task"], devices=devices,
               teacher={"arch": summary["teacher"]["arch"], "metric": metric,
                        "dev_metric": summary["teacher"]["dev_metrics"][metric]},
               student={"arch": summary["student"]["arch"], "dev_metric": summary["student"]["dev_metrics"][metric]},
               baseline=summary.get("baseline"))  # fmt: skip
    atomic_write_json(args.out, doc)
    cfg = quick_config(2) if args.quick else BenchConfig(batch=1, seq=128, threads=2, rounds=args.rounds, block=5)
    teacher, student = Path(summary["teacher"]["path"]), Path(summary["student"]["path"])
    peers = run_peers(teacher, student, cfg, workdir=args.work, deployable=deployable(doc["devices"]))
    doc["peers"] = {k: peers[k] for k in ("rows", "deployable", "headline", "targets", "machine", "config")}
    doc["targets"] = targets(doc)
    plot(doc, args.out.with_suffix(".png"))
    atomic_write_json(args.out, doc)
    print(format_peers(peers))
    print(json.dumps(doc["targets"], indent=1))
    print(f"wrote {shown(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
