"""Benchmark of issue 19's score target: does a search priced at the task's real input length find a better student
than one priced at 128 padded tokens, under the same budget fraction?

Steps (each one's result is kept in the results file; a rerun skips finished steps and resumes an unfinished run
from its finished stages, ``--redo`` runs a step again and keeps the earlier result on record):

1. ``fixed``    ``kdnas-deploy run configs/glue/<task>.yaml`` as it is (``latency.seq: 128``): fine-tunes the
                teacher, searches, distills, exports and benches the student.
2. ``auto``     the same config with ``latency.seq: auto`` only (and ``teacher.path``: the fixed run's teacher): the
                budget is the same fraction of the teacher's latency, both priced at the task's p95 length.
3. ``compare``  both students' dev predictions (PyTorch, at the teacher's ``max_seq_len``): each one's main metric,
                the difference in points with a paired bootstrap 95% interval (dev rows resampled, both students
                scored on the same rows), the rows only one of them gets right, and each student priced at both
                lengths. Target: the ``auto`` student scores >= 0.5 points more.

With ``--table`` both runs price candidates on that one (multi-length) table, so the only difference between
them is the length; without it, each run takes the table that matches this machine. ``--seeds 0,1`` repeats the
pair of runs with other search seeds (candidate draws, proxy splits, distillation), every run distilling from the
first fixed run's teacher: steps ``fixed@seed1``, ``auto@seed1``, ``compare@seed1`` and run folders
``seq128-seed1`` beside seed 0's. One seed's student is one draw of the search (SST-2, one seed: +0.00 points
with a 95% interval of +-1.49); the target is then judged on the mean difference over the seeds run.

    python -m tools.bench_seq_score --data-dir ../shared/data/glue --table TABLE_S32_64_128.json
    python -m tools.bench_seq_score --data-dir ../shared/data/glue --table TABLE_S32_64_128.json --seeds 0,1
    python -m tools.bench_seq_score --task sst2 --steps compare        # the comparison again, no training
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kdnas_deploy.io import atomic_write_json
from tools._common import GLUE_DIR, RESULTS, ROOT, WORK, cpu_name, kdnas_cli, run_tracked, shown
from tools.bench_glue import STOP_EXIT, facts, stage_seconds, stop_line

SCHEMA_VERSION = 1
STEPS = ("fixed", "auto", "compare")
TARGET_POINTS = 0.5  # issue 19: the seq-auto student scores >= 0.5 points more
BOOTSTRAP = 2000


def variant_config(task: str, data_dir: Path, table: Path | None, auto: bool, teacher: str | None,
                   seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """configs/glue/<task>.yaml with the data folder filled in; ``auto`` changes ``latency.seq`` and nothing else
    but the teacher (the fixed run's, so both searches distill from the same model); a ``seed`` other than 0
    replaces ``search.seed``."""
    cfg = yaml.safe_load((ROOT / "configs" / "glue" / f"{task}.yaml").read_text(encoding="utf-8"))
    cfg["task"]["data_dir"] = str(data_dir)
    if table is not None:
        for dev in cfg["devices"]:
            dev["table"] = str(table)
    if auto:
        cfg["latency"]["seq"] = "auto"
    if teacher:
        cfg["teacher"] = {"path": teacher}
    if seed:
        cfg["search"]["seed"] = seed
    return cfg


def variant_name(cfg: dict[str, Any]) -> str:
    seed = int(cfg["search"].get("seed", 0))
    return f"seq{cfg['latency']['seq']}" + (f"-seed{seed}" if seed else "")


def step_name(step: str, seed: int) -> str:
    """Seed 0 keeps the plain step names (results recorded before ``--seeds`` existed stay valid)."""
    return f"{step}@seed{seed}" if seed else step


def parse_seeds(text: str) -> list[int]:
    """``0,1`` -> ``[0, 1]``: distinct non-negative integers, in the order given; ValueError names the bad one."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if not part.isdigit():
            raise ValueError(f"--seeds takes non-negative integers separated by commas, not {part!r}")
        if int(part) not in out:
            out.append(int(part))
    if not out:
        raise ValueError("--seeds is empty")
    return out


def paired_difference(metric: Any, pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray,
                      n: int = BOOTSTRAP, seed: int = 0) -> dict[str, float]:
    """``metric(b) - metric(a)`` on the dev rows and its paired bootstrap: the same resampled rows score both
    models, so what the two share (the rows' difficulty) cancels. Points are metric x 100."""
    rng = np.random.default_rng(seed)
    rows = len(labels)
    diffs = np.empty(n)
    for i in range(n):
        idx = rng.integers(0, rows, rows)
        diffs[i] = metric(pred_b[idx], labels[idx]) - metric(pred_a[idx], labels[idx])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference_points": round(100 * (metric(pred_b, labels) - metric(pred_a, labels)), 3),
            "ci95_points": [round(100 * float(low), 3), round(100 * float(high), 3)],
            "share_of_resamples_b_better": round(float(np.mean(diffs > 0)), 4), "resamples": n}


def discordant(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Classification: the rows only one of the two models gets right (McNemar's counts)."""
    right_a, right_b = pred_a == labels, pred_b == labels
    return {"only_fixed_right": int(np.sum(right_a & ~right_b)), "only_auto_right": int(np.sum(right_b & ~right_a))}


def targets(compare: dict[str, Any]) -> dict[str, Any]:
    gain = compare["paired"]["difference_points"]
    return {"seq_auto_gain_points": {"value": gain, "target": TARGET_POINTS, "met": gain >= TARGET_POINTS,
                                     "ci95_points": compare["paired"]["ci95_points"]}}


def across_seeds(compares: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The comparisons of several seeds side by side and the target on their mean difference."""
    seeds = sorted(compares)
    diffs = [compares[s]["paired"]["difference_points"] for s in seeds]
    mean = round(float(np.mean(diffs)), 3)
    out = {"seeds": seeds, "difference_points": diffs, "mean_difference_points": mean,
           "fixed_metric": [compares[s]["fixed"]["metric_recomputed"] for s in seeds],
           "auto_metric": [compares[s]["auto"]["metric_recomputed"] for s in seeds],
           "fixed_student": [compares[s]["fixed"]["student"] for s in seeds],
           "auto_student": [compares[s]["auto"]["student"] for s in seeds]}  # fmt: skip
    out["targets"] = {"seq_auto_gain_points": {"value": mean, "target": TARGET_POINTS, "met": mean >= TARGET_POINTS,
                                               "over": f"mean of {len(seeds)} seed(s)",
                                               "per_seed_points": diffs}}  # fmt: skip
    return out


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.task, self.redo = args.task, set(args.redo.split(",")) if args.redo else set()
        self.data_dir = Path(args.data_dir).resolve()
        self.table = Path(args.table).resolve() if args.table else None
        self.work = (args.work or WORK / "seq_score") / self.task
        self.out = args.results or RESULTS / "seq_score.json"
        self.doc: dict[str, Any] = json.loads(self.out.read_text()) if self.out.is_file() else {}
        self.doc.update({"schema_version": SCHEMA_VERSION, "tool": "python -m tools.bench_seq_score",
                         "task": self.task, "table": shown(self.table) if self.table else None})  # fmt: skip
        self.doc.setdefault("steps", {})

    def step(self, name: str, fn: Any) -> dict[str, Any]:
        steps = self.doc["steps"]
        if name in steps and name.split("@")[0] not in self.redo:
            return steps[name]
        if name in steps:  # --redo: the earlier result stays on record
            self.doc.setdefault("history", {}).setdefault(name, []).append(steps.pop(name))
        print(f"[{self.task}] {name} ...", flush=True)
        steps[name] = {**fn(), "cpu": cpu_name()}
        atomic_write_json(self.out, self.doc)
        return steps[name]

    def run(self, auto: bool, teacher: str | None, seed: int = 0) -> dict[str, Any]:
        cfg = variant_config(self.task, self.data_dir, self.table, auto, teacher, seed)
        name = variant_name(cfg)
        self.work.mkdir(parents=True, exist_ok=True)
        cfg_path, out, log_path = self.work / f"{name}.yaml", self.work / name, self.work / f"run-{name}.log"
        cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        with open(log_path, "a", encoding="utf-8") as log:
            rc, peak_gb, wall = run_tracked(kdnas_cli("run", str(cfg_path), "--out", str(out), "--no-progress"),
                                            log=log)
        cost = {"wall_s": round(max(wall, stage_seconds(out)), 1), "peak_rss_gb": round(peak_gb, 2)}
        if rc == STOP_EXIT:
            return {"run": shown(out), "stopped": stop_line(log_path), **cost}
        if rc != 0:
            raise SystemExit(f"{self.task} {name}: kdnas-deploy run exited {rc} (log: {shown(log_path)})")
        summary = json.loads((out / "summary.json").read_text())
        return {"run": shown(out), "summary": facts(out), "seq": summary.get("seq"),
                "budgets_ms": summary.get("budgets_ms"), **cost}

    def compare(self, fixed: dict[str, Any], auto: dict[str, Any]) -> dict[str, Any]:
        from kdnas_deploy.tasks import get_task

        task = get_task(self.task, self.data_dir)
        seq_len = int(fixed["summary"]["max_seq_len"])
        pred_a, labels = dev_predictions(student_dir(fixed), task, seq_len)
        pred_b, _ = dev_predictions(student_dir(auto), task, seq_len)
        metric = task.main_metric

        def score(pred: np.ndarray, gold: np.ndarray) -> float:
            return float(task.compute_metrics(pred, gold)[metric])

        out: dict[str, Any] = {"metric": metric, "dev_rows": len(labels), "max_seq_len": seq_len,
                               "fixed": variant_facts(fixed, score(pred_a, labels)),
                               "auto": variant_facts(auto, score(pred_b, labels)),
                               "paired": paired_difference(score, pred_a, pred_b, labels)}  # fmt: skip
        if not task.is_regression:
            out["discordant"] = discordant(pred_a, pred_b, labels)
        if self.table is not None:
            out["priced"] = cross_prices(self.table, fixed, auto)
        out["targets"] = targets(out)
        return out


def student_dir(step: dict[str, Any]) -> Path:
    """The run's distilled student (HF folder), as its summary.json names it."""
    summary = json.loads((ROOT / step["run"] / "summary.json").read_text())
    return ROOT / summary["student"]["path"]


def dev_predictions(model_dir: Path, task: Any, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The model's dev predictions (class ids, or the regression value) and the gold labels, in dev order."""
    from kdnas_deploy.distill.data import encode, predict
    from kdnas_deploy.distill.teachers import load_classifier, load_tokenizer

    model, tokenizer = load_classifier(str(model_dir), task), load_tokenizer(str(model_dir))
    enc = encode(task.load_split("dev"), task, tokenizer, max_seq_len)
    logits = predict(model, enc)
    preds = logits[:, 0] if task.is_regression else logits.argmax(axis=-1)
    return preds, np.asarray(enc.labels)


def variant_facts(step: dict[str, Any], metric_now: float) -> dict[str, Any]:
    s = step["summary"]
    return {"run": step["run"], "seq": step.get("seq"), "budgets_ms": step.get("budgets_ms"),
            "student": s["student"]["arch"], "params": s["student"]["params"],
            "dev_metrics": s["student"]["dev_metrics"], "onnx_dev_metrics": s["student"].get("onnx_dev_metrics"),
            "metric_recomputed": round(metric_now, 4), "predicted_ms": s["student"]["predicted_ms"],
            "measured_ms": s["student"]["measured_ms"], "teacher_measured_ms": s["teacher"]["measured_ms"],
            "speedup": s.get("speedup"), "wall_s": step["wall_s"], "peak_rss_gb": step["peak_rss_gb"]}  # fmt: skip


def cross_prices(table_path: Path, fixed: dict[str, Any], auto: dict[str, Any]) -> dict[str, Any]:
    """Both students and the teacher priced by the shared table at both runs' lengths (no re-anchoring): the
    auto student may fit its budget only at the real length."""
    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.latency.table import LatencyTable

    table = LatencyTable.load(table_path)
    lengths = sorted({int((v.get("seq") or {}).get("seq") or 128) for v in (fixed, auto)})
    models = {"teacher": fixed["summary"]["teacher"]["arch"], "fixed": fixed["summary"]["student"]["arch"],
              "auto": auto["summary"]["student"]["arch"]}
    out: dict[str, Any] = {}
    for seq in lengths:
        ms = table.predict([Architecture.parse(a) for a in models.values()], 1, seq, calibrated=False)
        out[f"seq{seq}"] = {name: round(float(v), 4) for name, v in zip(models, ms, strict=True)}
        out[f"seq{seq}"]["fraction_of_teacher"] = {n: round(float(v / ms[0]), 4)
                                                   for n, v in zip(("fixed", "auto"), ms[1:], strict=True)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(GLUE_DIR), help="GLUE layout root (default: ../shared/data/glue)")
    ap.add_argument("--task", default="sst2", help="a GLUE-layout task with a configs/glue/<task>.yaml")
    ap.add_argument("--table", default=None,
                    help="one multi-length table of this CPU both runs price candidates on (default: each run's own)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated steps of {', '.join(STEPS)}")
    ap.add_argument("--redo", default="", help="steps to run again, comma-separated (for every seed given)")
    ap.add_argument("--seeds", default="0",
                    help="search seeds, comma-separated: the pair of runs is repeated per seed (default: 0)")
    ap.add_argument("--work", type=Path, default=None, help="run folders (default: work_artifacts/seq_score)")
    ap.add_argument("--results", type=Path, default=None, help="results file (default: tools/results/seq_score.json)")
    args = ap.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    bad = [s for s in steps + [r for r in args.redo.split(",") if r] if s not in STEPS]
    if bad:
        ap.error(f"unknown step(s) {', '.join(bad)} (choose from {', '.join(STEPS)})")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        ap.error(str(exc))
    if not (ROOT / "configs" / "glue" / f"{args.task}.yaml").is_file():
        ap.error(f"no configs/glue/{args.task}.yaml: --task takes a task with a GLUE config")
    if args.table and not Path(args.table).is_file():
        ap.error(f"--table {args.table}: no such file")
    try:
        from kdnas_deploy.errors import KdnasError
        from kdnas_deploy.io import check_writable
        from kdnas_deploy.tasks import get_task

        get_task(args.task, args.data_dir).load_split("dev")  # data that cannot be had fails before any run
        check_writable(args.results or RESULTS / "seq_score.json", "--results")  # not after an hour of runs
        check_writable((args.work or WORK / "seq_score") / args.task / "probe", "--work")
    except KdnasError as exc:
        ap.exit(2, f"Error: {exc}\n")
    b = Bench(args)
    for seed in seeds:
        run_seed(b, seed, steps, ap)
    compares = {int(k.partition("@seed")[2] or 0): v for k, v in b.doc["steps"].items()
                if k.split("@")[0] == "compare"}  # this run's seeds and those compared earlier  # fmt: skip
    if len(compares) > 1:
        b.doc["across_seeds"] = across_seeds(compares)
        b.doc["targets"] = b.doc["across_seeds"]["targets"]
        atomic_write_json(b.out, b.doc)
        agg = b.doc["across_seeds"]
        print(f"over seeds {agg['seeds']}: auto - fixed {agg['difference_points']} points, mean "
              f"{agg['mean_difference_points']:+.2f}; wrote {shown(b.out)}")


def run_seed(b: Bench, seed: int, steps: list[str], ap: argparse.ArgumentParser) -> None:
    """One seed's fixed run, auto run and comparison (each step resumable, recorded in ``b.doc``)."""
    first = b.doc["steps"].get("fixed")  # every seed distills from the first fixed run's teacher
    shared = str(ROOT / first["summary"]["teacher"]["path"]) if first and "summary" in first else None
    fixed_name, auto_name = step_name("fixed", seed), step_name("auto", seed)
    fixed = (b.step(fixed_name, lambda: b.run(False, shared if seed else None, seed)) if "fixed" in steps
             else b.doc["steps"].get(fixed_name))  # fmt: skip
    if fixed is None or "stopped" in fixed:
        ap.exit(2, f"Error: the {fixed_name} run has no student ({(fixed or {}).get('stopped', 'not run')})\n")
    teacher = str(ROOT / fixed["summary"]["teacher"]["path"])
    auto = b.step(auto_name, lambda: b.run(True, teacher, seed)) if "auto" in steps else b.doc["steps"].get(auto_name)
    if auto is None or "stopped" in auto:
        ap.exit(2, f"Error: the {auto_name} run has no student ({(auto or {}).get('stopped', 'not run')})\n")
    if "compare" not in steps:
        return
    cmp = b.step(step_name("compare", seed), lambda: b.compare(fixed, auto))
    b.doc["targets"] = cmp["targets"]
    atomic_write_json(b.out, b.doc)
    p = cmp["paired"]
    fixed_now, auto_now = cmp["fixed"]["metric_recomputed"], cmp["auto"]["metric_recomputed"]
    print(f"seed {seed}, {cmp['metric']}: fixed {fixed_now:.4f}, auto {auto_now:.4f} ({p['difference_points']:+.2f}"
          f" points, 95% CI {p['ci95_points']}); wrote {shown(b.out)}")


if __name__ == "__main__":  # pragma: no cover
    main()
