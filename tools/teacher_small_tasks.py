"""Teachers on the small GLUE tasks with ``teacher finetune``'s default recipe (``--preset auto``), issue 15.

For each task: ``kdnas-deploy teacher finetune --task T --data-dir DIR --out WORK/teacher-T`` with no recipe
option, then its dev metric beside the dev split's trivial baseline (``dev_metrics.json``), the recipe ``auto``
chose (``teacher_record.json``), wall time and peak RSS, into ``tools/results/teacher_small_tasks.json`` with a
``targets`` object (every teacher >= 0.10 above its baseline). A finished teacher folder is reused (a killed
fine-tune resumes from its ``.work`` folder), so a rerun only does what is missing.

    python -m tools.teacher_small_tasks --data-dir ../shared/data/glue                 # mrpc, stsb, cola
    python -m tools.teacher_small_tasks --data-dir ../shared/data/glue --tasks rte,wnli
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path
from typing import Any

from kdnas_deploy.io import atomic_write_json
from tools._common import GLUE_DIR, RESULTS, WORK, kdnas_cli, run_tracked, shown

SCHEMA_VERSION = 1
MARGIN_TARGET = 0.10
OUT = RESULTS / "teacher_small_tasks.json"


def command(task: str, data_dir: str, out: Path, threads: int) -> list[str]:
    """The recipe is the default (``--preset auto``): no recipe option is given."""
    return ["teacher", "finetune", "--task", task, "--data-dir", data_dir, "--out", shown(out), "--threads",
            str(threads)]


def collect(task: str, folder: Path) -> dict[str, Any]:
    """The row of one finished teacher folder."""
    record = json.loads((folder / "teacher_record.json").read_text(encoding="utf-8"))
    dev = json.loads((folder / "dev_metrics.json").read_text(encoding="utf-8"))
    main = record["task"]["main_metric"]
    recipe = record.get("recipe") or {}
    metrics = {k: round(float(dev[k]), 4) for k in record["task"]["metrics"] if k in dev}
    baseline = {k: round(float(v), 4) for k, v in dev["baseline"].items()}
    return {
        "task": task,
        "main_metric": main,
        "recipe": recipe.get("recipe", "explicit"),
        "config": {k: record["config"][k] for k in ("epochs", "batch_size", "learning_rate", "warmup_ratio",
                                                      "max_seq_len")},  # fmt: skip
        "length": {k: v for k, v in (recipe.get("length") or {}).items() if k != "source"},
        "train_rows": record["train_examples"],
        "dev_rows": record["dev_examples"],
        "metric": metrics,
        "baseline": baseline,
        "margin": round(float(dev[main]) - float(dev["baseline"][main]), 4),
        "margin_by_metric": {k: round(v - baseline[k], 4) for k, v in metrics.items() if k in baseline},
        "best_epoch": record.get("best_epoch"),
        "train_seconds": record.get("train_seconds"),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(GLUE_DIR), help="GLUE layout root (default: ../shared/data/glue)")
    ap.add_argument("--tasks", default="mrpc,stsb,cola", help="comma-separated GLUE task names")
    ap.add_argument("--work", type=Path, default=WORK / "teacher_small_tasks", help="teacher folders and logs")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: a shared 2-core machine trains "
                    "faster with one thread than with two contended ones)")
    args = ap.parse_args(argv)
    # result files name no machine paths: an absolute --data-dir is recorded as the documented ../shared one
    data_arg = args.data_dir if not Path(args.data_dir).is_absolute() else "../shared/data/glue"
    doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    doc.update({"schema_version": SCHEMA_VERSION, "tool": "python -m tools.teacher_small_tasks",
                "model": "minilm-l6 (all-MiniLM-L6-v2, 6 layers, H384)"})  # fmt: skip
    doc.setdefault("tasks", {})
    doc.setdefault("commands", {})
    args.work.mkdir(parents=True, exist_ok=True)
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        folder = args.work / f"teacher-{task}"
        cmd = command(task, args.data_dir, folder, args.threads)
        doc["commands"][task] = "kdnas-deploy " + shlex.join(command(task, data_arg, folder, args.threads))
        if not (folder / "teacher_record.json").is_file():
            with open(args.work / f"teacher-{task}.log", "w", encoding="utf-8") as log:
                rc, peak_gb, wall = run_tracked(kdnas_cli(*cmd, "--force"), log=log)
            if rc != 0:
                raise SystemExit(f"{task}: teacher finetune exited {rc} (see {shown(args.work)}/teacher-{task}.log)")
            row = {**collect(task, folder), "wall_s": round(wall, 1), "peak_rss_gb": round(peak_gb, 2)}
        else:  # reused: keep the wall time measured when it was made, else the record's training time
            row = {**doc["tasks"].get(task, {}), **collect(task, folder)}
            if "wall_s" not in row:
                row["wall_s"], row["wall_s_source"] = row["train_seconds"], "train_seconds (folder made elsewhere)"
        doc["tasks"][task] = row
        doc["updated_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        doc["targets"] = targets(doc["tasks"])
        atomic_write_json(args.out, doc)
        print(f"{task}: {row['main_metric']} {row['metric'][row['main_metric']]:.4f} vs baseline "
              f"{row['baseline'][row['main_metric']]:.4f} (margin {row['margin']:+.4f}), recipe {row['recipe']}")
    print(f"wrote {shown(args.out)}")


def targets(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {f"{task}_margin_over_baseline": {"value": row["margin"], "target": MARGIN_TARGET,
                                            "met": row["margin"] >= MARGIN_TARGET}
           for task, row in rows.items()}  # fmt: skip
    out["every_teacher_margin_min"] = {"value": min(r["margin"] for r in rows.values()), "target": MARGIN_TARGET,
                                       "met": all(r["margin"] >= MARGIN_TARGET for r in rows.values())}  # fmt: skip
    return out


if __name__ == "__main__":  # pragma: no cover
    main()
