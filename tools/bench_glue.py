"""Issue 15's table: KD-NAS across GLUE tasks, fp32 and int8 students, beside trivial baselines and a hand-crafted
student -> ``tools/results/glue_table.{json,md,png}``.

Per task (each step's result is kept in the results file; a rerun skips finished steps, ``--redo`` reruns them,
and every ``kdnas-deploy run`` below resumes its own stages):

1. ``fp32``   ``kdnas-deploy run configs/glue/<task>.yaml``: teacher (``teacher.preset: auto``), search at 1/3 of
              the teacher's predicted fp32 latency, final distillation, export, bench;
2. ``int8``   ``configs/glue/<task>-int8.yaml`` on the same teacher (``teacher.path``): int8 table and export,
              about 1/6 of the fp32 teacher's predicted latency;
3. ``hand``   the hand-crafted student: the teacher's first L layers (same width), the largest L whose
              predicted fp32 latency is at most the KD-NAS fp32 student's, distilled with the same recipe
              (``distill --epochs final_epochs --max-seq-len`` the teacher's) and exported;
4. ``bench``  fp32 ONNX teacher, PyTorch teacher, hand-crafted, KD-NAS fp32 and int8 students timed interleaved
              in one window (``kdnas-deploy bench``);
5. the row: trivial baseline, metrics, params, predicted and measured latency, speedups over both teachers,
   retained ratio and retained gain; then the GLUE-average row and the issue's ``targets``.

    python -m tools.bench_glue --data-dir ../shared/data/glue                  # the table (hours on 2 cores)
    python -m tools.bench_glue --data-dir ../shared/data/glue --tasks mrpc     # one task
    python -m tools.bench_glue --quick                                         # smoke run: tiny budgets
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

from kdnas_deploy.io import atomic_write_json
from tools._common import GLUE_DIR, RESULTS, ROOT, WORK, cpu_name, kdnas_cli, run_tracked, shown
from tools._glue_report import markdown, plot, students

SCHEMA_VERSION = 1
TASKS = ("sst2", "mrpc", "cola", "stsb")
STEPS = ("fp32", "int8", "hand", "bench")
STOP_EXIT = 2  # kdnas-deploy's exit code for bad input and for the refusals of a weak teacher or a degenerate search
TARGETS = {"fp32_retained_avg_min": 0.97, "fp32_retained_each_min": 0.95, "fp32_speedup_min": 3.2,
           "fp32_retained_gain_avg_min": 0.90, "fp32_over_hand_points_min": 1.0, "int8_retained_avg_min": 0.96,
           "int8_speedup_min": 6.0, "teacher_margin_min": 0.10, "task_wall_s_max": 3600.0,
           "task_peak_rss_gb_max": 4.0, "mrpc_over_baseline_min": 0.05}  # fmt: skip
# --quick: the same steps on tiny budgets (minutes per task, numbers meaningless)
QUICK = {"teacher": {"max_train_samples": 256, "epochs": 0.3, "allow_weak": True},
         "search": {"episodes": 1, "candidates": 4, "top_k": 2, "proxy_min_rows": 64, "proxy_min_steps": 4,
                    "final_epochs": 0.05, "on_degenerate": "warn"},
         "bench": {"e2e_requests": 20}}  # fmt: skip


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.quick, self.redo, self.threads = args.quick, set(args.redo.split(",")) if args.redo else set(), 2
        self.skip = set(args.skip.split(",")) if args.skip else set()
        self.data_dir = Path(args.data_dir).resolve()
        self.work = args.work or WORK / ("glue_table_quick" if self.quick else "glue_table")
        self.out = args.results or RESULTS / ("glue_table_quick.json" if self.quick else "glue_table.json")
        self.doc: dict[str, Any] = json.loads(self.out.read_text()) if self.out.is_file() else {}
        self.doc.update({"schema_version": SCHEMA_VERSION, "quick": self.quick,
                         "tool": "python -m tools.bench_glue" + (" --quick" if self.quick else "")})  # fmt: skip
        self.doc.setdefault("tasks", {})

    def save(self) -> None:
        self.doc["updated_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_json(self.out, self.doc)

    def step(self, task: str, name: str, fn: Any) -> dict[str, Any]:
        steps = self.doc["tasks"].setdefault(task, {}).setdefault("steps", {})
        if name in steps and name not in self.redo:
            return steps[name]
        print(f"[{task}] {name} ...", flush=True)
        steps[name] = {**fn(), "cpu": cpu_name()}  # timings are compared within one CPU only
        self.save()
        return steps[name]

    def config(self, task: str, precision: str, teacher: str | None) -> Path:
        """configs/glue/<task>[-int8].yaml with the data folder (and the fp32 run's teacher) filled in."""
        name = f"{task}-int8" if precision == "int8" else task
        cfg = yaml.safe_load((ROOT / "configs" / "glue" / f"{name}.yaml").read_text(encoding="utf-8"))
        cfg["task"]["data_dir"] = str(self.data_dir)
        if teacher:
            cfg["teacher"] = {"path": teacher, "allow_weak": bool(self.quick)}
        if self.quick:
            for section, values in QUICK.items():
                if section != "teacher" or not teacher:
                    cfg.setdefault(section, {}).update(values)
        path = self.work / task / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        return path

    def run(self, task: str, precision: str, teacher: str | None = None) -> dict[str, Any]:
        out = self.work / task / precision
        cfg = self.config(task, precision, teacher)
        log_path = self.work / task / f"run-{precision}.log"
        with open(log_path, "a", encoding="utf-8") as log:
            rc, peak_gb, wall = run_tracked(kdnas_cli("run", str(cfg), "--out", str(out), "--no-progress"), log=log)
        # a resumed run reuses its finished stages: their recorded seconds count in the task's cost
        cost = {"wall_s": round(max(wall, stage_seconds(out)), 1), "peak_rss_gb": round(peak_gb, 2)}
        if rc == STOP_EXIT:  # a refusal the issue asks for (weak teacher, degenerate search): the task's result
            return {"run": shown(out), "stopped": stop_line(log_path), "teacher": teacher_facts(out), **cost}
        if rc != 0:
            raise SystemExit(f"{task} {precision}: kdnas-deploy run exited {rc} (log: {shown(out.parent)})")
        return {"run": shown(out), "summary": facts(out), **cost}

    def task(self, task: str) -> dict[str, Any]:
        fp32 = self.step(task, "fp32", lambda: self.run(task, "fp32"))
        if "stopped" in fp32:  # no student: the row says why, beside the teacher and its baseline
            self.doc["tasks"][task]["row"] = row = stopped_row(task, fp32)
            self.save()
            return row
        teacher = str(ROOT / fp32["summary"]["teacher"]["path"])
        int8 = None if "int8" in self.skip else self.step(task, "int8", lambda: self.run(task, "int8", teacher))
        benched8 = int8 if int8 is not None and "summary" in int8 else None  # a refused int8 run has no student
        hand = self.step(task, "hand", lambda: self.handcrafted(task, fp32))
        bench = self.step(task, "bench", lambda: self.bench(task, fp32, benched8, hand))
        row = table_row(task, self.data_dir, fp32, int8, hand, bench)
        row["cpu"] = bench.get("cpu")  # the CPU its latencies were measured on
        self.doc["tasks"][task]["row"] = row
        self.save()
        return row

    def handcrafted(self, task: str, fp32: dict[str, Any]) -> dict[str, Any]:
        import dataclasses

        from kdnas_deploy.arch import Architecture
        from kdnas_deploy.latency.table import LatencyTable

        s = fp32["summary"]
        table = LatencyTable.load(ROOT / next(iter(s["tables"].values())))
        teacher = Architecture.parse(s["teacher"]["arch"])
        limit = float(s["student"]["predicted_raw_ms"] or s["student"]["predicted_ms"])
        cuts = [dataclasses.replace(teacher, num_layers=k) for k in range(1, teacher.num_layers + 1)]
        fits = [a for a in cuts if table.predict_one(a, batch=1, seq=128) <= limit * 1.0001]
        arch = fits[-1] if fits else cuts[0]  # the teacher's first layers at (at most) the student's latency
        epochs = str(final_epochs_of(self.work / task, task, ROOT / s["run_dir"]))
        length = str(s.get("max_seq_len") or 128)
        model, onnx = self.work / task / "hand", self.work / task / "onnx-hand"
        common = ["--task", task, "--data-dir", str(self.data_dir)]
        steps = [["distill", "--teacher", str(ROOT / s["teacher"]["path"]), "--arch", arch.short(), "--out",
                  str(model), "--epochs", epochs, "--max-seq-len", length, "--force", "--no-progress", *common],
                 ["export", str(model), "--out", str(onnx), "--metric-task", task, "--data-dir", str(self.data_dir),
                  "--force"]]  # fmt: skip
        t0 = time.perf_counter()
        for args in steps:
            with open(self.work / task / "hand.log", "a", encoding="utf-8") as log:
                rc, _, _ = run_tracked(kdnas_cli(*args), log=log)
            if rc != 0:
                raise SystemExit(f"{task}: kdnas-deploy {args[0]} exited {rc} (log: {shown(self.work / task)})")
        dev = json.loads((model / "distill_record.json").read_text()).get("dev_metrics") or {}
        if not dev:
            rc, _, _ = run_tracked(kdnas_cli("evaluate", str(model), *common, "--json", str(model / "dev.json")))
            dev = json.loads((model / "dev.json").read_text())
        return {"arch": arch.short(), "params": arch.num_parameters(), "model": shown(model), "onnx": shown(onnx),
                "predicted_ms": round(float(table.predict_one(arch, batch=1, seq=128)), 4),
                "dev_metrics": {k: v for k, v in dev.items() if isinstance(v, int | float)},
                "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip

    def bench(self, task: str, fp32: dict[str, Any], int8: dict[str, Any] | None,
              hand: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        s32 = fp32["summary"]
        names = ["teacher_onnx", "teacher_pytorch", "hand", "kdnas_fp32"]
        folders = [s32["teacher_onnx"], s32["teacher"]["path"], hand["onnx"], s32["student"]["onnx"]]
        if int8 is not None:
            names.append("kdnas_int8")
            folders.append(int8["summary"]["student"]["onnx"])
        paths = [str(ROOT / p) for p in folders]
        out = self.work / task / "bench.json"
        args = ["bench", *paths, "--seq", "128", "--threads", str(self.threads), "--json", str(out),
                "--table", str(ROOT / next(iter(s32["tables"].values())))]
        # 30 rounds (~25 s): the speedups are medians of per-round ratios, steadier than one ratio of medians
        args += ["--rounds", "2", "--block", "2"] if self.quick else ["--rounds", "30"]
        rc, _, wall = run_tracked(kdnas_cli(*args))
        if rc != 0:
            raise SystemExit(f"{task}: kdnas-deploy bench exited {rc}")
        rows = json.loads(out.read_text())
        keep = ("median_ms", "predicted_ms", "runtime", "precision",  # an OpenVINO int8 export runs on its IR
                "speedup_paired", "speedup_paired_p10", "speedup_paired_p90")  # over teacher_onnx, the first
        return {"rows": {n: {k: r.get(k) for k in keep} for n, r in zip(names, rows, strict=True)},
                "seconds": round(wall, 1)}  # fmt: skip


def stage_seconds(run_dir: Path) -> float:
    """The seconds a run folder's finished stages took when they ran (``stages/*.json``), reused or not."""
    total = 0.0
    for path in (run_dir / "stages").glob("*.json"):
        try:
            total += float(json.loads(path.read_text()).get("seconds") or 0.0)
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return total


def final_epochs_of(work: Path, task: str, run_dir: Path) -> float:
    """The epochs the KD-NAS student's final distillation ran (its search summary's winner, raised by
    ``search.final_min_steps`` on a small task), else the config's ``final_epochs``: the hand-crafted student
    gets the same recipe."""
    summary = run_dir / "search" / "summary.json"
    if summary.is_file():
        winner = (json.loads(summary.read_text()).get("final") or {}).get("winner") or {}
        if winner.get("final_epochs"):
            return float(winner["final_epochs"])
    cfg = yaml.safe_load((work / f"{task}.yaml").read_text())
    return float(cfg["search"].get("final_epochs") or 3.0)


def facts(run_dir: Path) -> dict[str, Any]:
    """What the table needs of a run's summary.json, paths relative to the repository root; the student's
    deployed metric is the exported graph's (``metric_check.after`` of its export report)."""
    s = json.loads((run_dir / "summary.json").read_text())
    report = json.loads((run_dir / "onnx" / "student" / "export_report.json").read_text())
    check = report.get("metric_check") or {}
    keep = ("arch", "params", "dev_metrics", "predicted_ms", "predicted_raw_ms", "measured_ms")
    student = {k: s["student"].get(k) for k in keep}
    if check.get("metric"):
        student["onnx_dev_metrics"] = {check["metric"]: check["after"]}
    return {"run_dir": shown(run_dir), "teacher": {**{k: s["teacher"].get(k) for k in keep},
                                                   "path": shown(Path(s["teacher"]["path"]))},
            "student": {**student, "onnx": shown(run_dir / "onnx" / "student")},
            "teacher_onnx": shown(run_dir / "onnx" / "teacher"), "baseline": s["baseline"],
            "tables": {k: shown(Path(v)) for k, v in s["tables"].items()}, "max_seq_len": s.get("max_seq_len"),
            "speedup": s.get("speedup"), "retained_gain": s.get("retained_gain"),
            "degenerate": s.get("degenerate"), "escalation": bool(s.get("escalation"))}  # fmt: skip


def stop_line(log_path: Path) -> str:
    """The one-line refusal ``kdnas-deploy run`` printed last (``Error: ...``), else the log's last line."""
    lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    return (errors or lines or ["(empty log)"])[-1]


def teacher_facts(run_dir: Path) -> dict[str, Any] | None:
    """The teacher stage's record of a run that stopped after it: dev metrics, main metric, baseline."""
    record = run_dir / "stages" / "teacher.json"
    if not record.is_file():
        return None
    out = json.loads(record.read_text())["outputs"]
    return {k: out.get(k) for k in ("dev_metrics", "main_metric", "baseline", "max_seq_len")}


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
        row["models"][name] = {
            "metrics": metrics, "params": params, "predicted_ms": bench["rows"][key]["predicted_ms"],
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(GLUE_DIR), help="GLUE layout root (default: ../shared/data/glue)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="GLUE-layout tasks, comma-separated")
    ap.add_argument("--work", type=Path, default=None, help="run folders (default: work_artifacts/glue_table)")
    ap.add_argument("--results", type=Path, default=None,
                    help="results file (default: tools/results/glue_table.json); .md and .png are written beside it")
    ap.add_argument("--quick", action="store_true", help="smoke run on tiny budgets into glue_table_quick.*")
    ap.add_argument("--redo", default="", help=f"steps to run again, comma-separated ({', '.join(STEPS)})")
    ap.add_argument("--skip", default="", choices=["", "int8"],
                    help="int8: no int8 run (the rows say kdnas_int8 was not run; its targets are unmet)")
    args = ap.parse_args(argv)
    b = Bench(args)
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        b.task(task)
    # the table, its averages and targets cover every task with a row, this run's and earlier runs'
    rows = {task: t["row"] for task, t in b.doc["tasks"].items() if "row" in t}
    avg = averages(rows)
    b.doc.update({"glue_average": avg, "targets": targets(rows, avg)})
    b.save()
    b.out.with_suffix(".md").write_text(markdown(rows, avg), encoding="utf-8")
    plot(rows, b.out.with_suffix(".png"))
    print(f"wrote {shown(b.out)} (+ .md, .png)")


if __name__ == "__main__":  # pragma: no cover
    main()
