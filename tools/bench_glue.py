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
from tools._glue_report import PUBLISHED, markdown, plot
from tools._glue_table import averages, stopped_row, table_row, targets

SCHEMA_VERSION = 1
TASKS = ("sst2", "mrpc", "cola", "stsb")
STEPS = ("fp32", "int8", "hand", "bench")
STOP_EXIT = 2  # kdnas-deploy's exit code for bad input and for the refusals of a weak teacher or a degenerate search
# --quick: the same steps on tiny budgets (minutes per task, numbers meaningless)
QUICK = {"teacher": {"max_train_samples": 256, "epochs": 0.3, "allow_weak": True},
         "search": {"episodes": 1, "candidates": 4, "top_k": 2, "proxy_min_rows": 64, "proxy_min_steps": 4,
                    "final_epochs": 0.05, "on_degenerate": "warn"},
         "bench": {"e2e_requests": 20}}  # fmt: skip


USES = {"fp32": (), "int8": ("fp32",), "hand": ("fp32",), "bench": ("fp32", "int8", "hand")}  # step: its inputs


def redo_steps(redo: str) -> set[str]:
    """The steps ``--redo`` runs again: those named and every step that uses one of them (a new fp32 run has a
    new teacher and student, so its int8 run, hand-crafted student and bench are stale)."""
    todo = {s.strip() for s in redo.split(",") if s.strip()}
    unknown = todo - set(STEPS)
    if unknown:
        raise SystemExit(f"--redo: unknown step(s) {', '.join(sorted(unknown))}; steps: {', '.join(STEPS)}")
    for step in STEPS:  # in order, so a step's inputs are settled before it
        if todo & set(USES[step]):
            todo.add(step)
    return todo


def headroom_arg(text: str) -> float | str:
    """``--headroom``: ``auto`` or a share in [0, 1)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected auto or a number in [0, 1), got {text!r}")
    return value


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.quick, self.redo, self.threads = args.quick, redo_steps(args.redo), 2
        self.skip = set(args.skip.split(",")) if args.skip else set()
        self.headroom = args.headroom  # every device's headroom instead of the configs' own
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
        if name in steps:  # --redo: the earlier result stays on record (every run is kept)
            self.doc["tasks"][task].setdefault("history", {}).setdefault(name, []).append(steps.pop(name))
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
        if self.headroom is not None:
            for dev in cfg["devices"]:
                dev["headroom"] = self.headroom
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
        if "bench" in self.skip:  # timings later, on a quiet machine (--redo bench); the task's row waits for them
            return self.doc["tasks"][task].get("row") or {}
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
        attempts, wall = [], 0.0
        for _ in range(1 if self.quick else BENCH_ATTEMPTS):
            rc, _, seconds = run_tracked(kdnas_cli(*args))
            wall += seconds
            if rc != 0:
                raise SystemExit(f"{task}: kdnas-deploy bench exited {rc}")
            attempts.append(bench_rows(names, json.loads(out.read_text())))
            if not disturbed(attempts[-1]):
                break
        keep = min(attempts, key=worst_spread)  # the quietest window; every attempt stays on record
        return {"rows": keep, "attempts": [{"worst_p90_over_p10": worst_spread(a), "disturbed": disturbed(a)}
                                           for a in attempts], "seconds": round(wall, 1)}  # fmt: skip


BENCH_ATTEMPTS = 3  # a bench whose window was disturbed (a row's p90 > 1.5x its p10) is timed again, at most 3x
BENCH_KEEP = ("median_ms", "p10_ms", "p90_ms", "p90_over_p10", "disturbed", "predicted_ms", "runtime", "precision",
              "speedup_paired", "speedup_paired_p10", "speedup_paired_p90")  # fmt: skip


def bench_rows(names: list[str], rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The bench's rows by model name, the fields the table uses (an OpenVINO int8 export runs on its IR)."""
    return {n: {k: r.get(k) for k in BENCH_KEEP} for n, r in zip(names, rows, strict=True)}


def worst_spread(rows: dict[str, dict[str, Any]]) -> float:
    return max(float(r.get("p90_over_p10") or 1.0) for r in rows.values())


def disturbed(rows: dict[str, dict[str, Any]]) -> bool:
    return any(r.get("disturbed") for r in rows.values())


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(GLUE_DIR), help="GLUE layout root (default: ../shared/data/glue)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="GLUE-layout tasks, comma-separated")
    ap.add_argument("--work", type=Path, default=None, help="run folders (default: work_artifacts/glue_table)")
    ap.add_argument("--results", type=Path, default=None,
                    help="results file (default: tools/results/glue_table.json); .md and .png are written beside it")
    ap.add_argument("--quick", action="store_true", help="smoke run on tiny budgets into glue_table_quick.*")
    ap.add_argument("--redo", default="", help=f"steps to run again, comma-separated ({', '.join(STEPS)})")
    ap.add_argument("--skip", default="", choices=["", "int8", "bench"],
                    help="int8: no int8 run (the rows say kdnas_int8 was not run; its targets are unmet); bench: "
                         "train and export only, time later with --redo bench (no other job may run then)")
    ap.add_argument("--headroom", type=headroom_arg, default=None,
                    help="every device's headroom (a share in [0, 1) or auto) instead of the configs' own; use "
                         "another --work and --results, so the table of record keeps one setting")
    args = ap.parse_args(argv)
    b = Bench(args)
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        b.task(task)
    # the table, its averages and targets cover every task with a row, this run's and earlier runs'
    rows = {task: t["row"] for task, t in b.doc["tasks"].items() if "row" in t}
    avg = averages(rows)
    b.doc.update({"glue_average": avg, "targets": targets(rows, avg),
                  "published_reference": {t: PUBLISHED[t] for t in rows if t in PUBLISHED}})
    b.save()
    b.out.with_suffix(".md").write_text(markdown(rows, avg), encoding="utf-8")
    plot(rows, b.out.with_suffix(".png"))
    print(f"wrote {shown(b.out)} (+ .md, .png)")


if __name__ == "__main__":  # pragma: no cover
    main()
