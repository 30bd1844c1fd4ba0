#!/usr/bin/env python
"""Benchmark of the distill stage's targets on SST-2 (issue 3). Run from the repository root, alone on the machine:

    python -m tools.bench_distill --teacher TEACHER_DIR --data-dir ../shared/data/glue \
        --work work_artifacts/distill/bench

Stages (each result is merged into the JSON as soon as it is measured, so a killed run loses nothing):
  teacher  dev metrics of the teacher (target: accuracy >= 0.90)
  proxy    one candidate distilled on a 10% proxy set of SST-2 train, evaluated on a held-out slice of train,
           with a teacher-output cache: a cold run (builds the cache), then warm runs (target: <= 120 s each);
           cache size on disk
  full3    L=3,H=384,A=12,F=1536 from teacher init on SST-2 train -> dev accuracy >= 97% of the teacher's;
           peak RSS of the whole distillation process (target: < 6 GB)
  full2    L=2,H=256,A=4,F=1152 likewise -> >= 95% of the teacher's
Every run of full3/full2 is kept: the headline entry is the best dev accuracy of the same student and teacher,
the others are under ``earlier_runs`` with their commands.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdnas_deploy.io import atomic_write_json
from tools._common import GLUE_DIR, RESULTS, WORK, run_tracked

SCHEMA_VERSION = 1
PROXY_FRACTION = 0.10
HELDOUT = 872
ARCH_3 = "L=3,H=384,A=12,F=1536"
ARCH_2 = "L=2,H=256,A=4,F=1152"


def _better_student(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``old`` stays the headline result: the same student and teacher, a higher dev accuracy."""
    same = old.get("arch") == new.get("arch") and old.get("teacher") == new.get("teacher")
    return same and old.get("dev_accuracy", -1.0) > new.get("dev_accuracy", -1.0)


def _merge(
    path: Path,
    key: str,
    value: Any,
    keep_old: bool = False,
    better: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Set ``doc[key] = value``; with ``keep_old`` the value it replaces moves to ``earlier_runs``. With
    ``better(old, new)`` true, the old value stays and the new one goes to ``earlier_runs`` instead (every
    run is kept; the headline is the best)."""
    doc = json.loads(path.read_text()) if path.is_file() else {}
    if keep_old and key in doc:
        old = doc[key]
        if better is not None and better(old, value):
            old, value = value, old
        doc.setdefault("earlier_runs", []).append({"key": key, **old})
    doc[key] = value
    doc["schema_version"] = SCHEMA_VERSION
    doc["updated_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(path, doc)
    return doc


def _machine() -> dict[str, Any]:
    import psutil
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def stage_teacher(args: argparse.Namespace) -> dict[str, Any]:
    from kdnas_deploy.distill.evaluate import evaluate_model
    from kdnas_deploy.tasks import get_task

    doc = evaluate_model(args.teacher, get_task("sst2", args.data_dir), "dev", progress=False)
    return {
        "teacher": str(args.teacher),
        "dev_accuracy": doc["accuracy"],
        "num_examples": doc["num_examples"],
        "target_accuracy": 0.90,
        "met": doc["accuracy"] >= 0.90,
    }


def proxy_split(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    import numpy as np

    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(PROXY_FRACTION * n))
    return sorted(perm[:k].tolist()), sorted(perm[k : k + HELDOUT].tolist())


def stage_proxy(args: argparse.Namespace) -> dict[str, Any]:
    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.distill import DistillConfig, distill
    from kdnas_deploy.tasks import get_task

    task = get_task("sst2", args.data_dir)
    train = task.load_split("train")
    proxy_idx, held_idx = proxy_split(len(train))
    proxy, held = train.select(proxy_idx), train.select(held_idx)
    cache = args.work / "proxy-cache"
    shutil.rmtree(cache, ignore_errors=True)
    runs = []
    plan = [(ARCH_3, "cold (builds cache)")]
    plan += [(a, "warm") for _ in range(args.proxy_repeats) for a in (ARCH_2, ARCH_3)]
    for arch, label in plan:
        t0 = time.perf_counter()
        res = distill(
            args.teacher,
            Architecture.parse(arch),
            task,
            config=DistillConfig.proxy(),
            train=proxy,
            eval=held,
            cache_dir=cache,
            progress=False,
        )
        wall = time.perf_counter() - t0
        runs.append(
            {
                "arch": arch,
                "run": label,
                "cache_hit": res.cache_hit,
                "wall_seconds": round(wall, 2),
                "loop_seconds": res.loop_seconds,
                "heldout_accuracy": res.score,
                "final_loss": res.final_loss,
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    entries = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    size = sum(f.stat().st_size for e in entries for f in e.iterdir())
    meta = json.loads((entries[0] / "meta.json").read_text())
    warm = [r["wall_seconds"] for r in runs if r["cache_hit"]]
    per_arch = {
        a: {
            "median_wall_seconds": statistics.median(w),
            "min_wall_seconds": min(w),
            "max_wall_seconds": max(w),
        }
        for a in (ARCH_2, ARCH_3)
        if (w := [r["wall_seconds"] for r in runs if r["cache_hit"] and r["arch"] == a])
    }
    return {
        "proxy_examples": len(proxy),
        "heldout_examples": len(held),
        "config": DistillConfig.proxy().to_dict(),
        "runs": runs,
        "cache_bytes": size,
        "cache_mb": round(size / 2**20, 2),
        "cache_entries": len(entries),
        "cache_layers": meta["layers"],
        "cache_tokens": meta["num_tokens"],
        "cache_dtype": meta["dtype"],
        "warm_by_arch": per_arch,
        "median_warm_seconds": statistics.median(warm),
        "max_warm_seconds": max(warm),
        "target_seconds": 120,
        "met": max(warm) <= 120,
        "note": "wall time of one distill() call: teacher load, init, cache load, 1 epoch, held-out eval",
    }


def _run_with_peak_rss(cmd: list[str], log: Path) -> tuple[int, float, float]:
    with open(log, "w") as fh:
        return run_tracked(cmd, log=fh, interval_s=0.2)


def stage_full(args: argparse.Namespace, arch: str, ratio: float, teacher_acc: float) -> dict[str, Any]:
    from kdnas_deploy.distill.evaluate import evaluate_model
    from kdnas_deploy.tasks import get_task

    name = "student-" + arch.replace(",", "").replace("=", "")
    out = args.work / name
    cmd = [
        sys.executable,
        "-m",
        "kdnas_deploy",
        "distill",
        "--teacher",
        str(args.teacher),
        "--arch",
        arch,
        "--task",
        "sst2",
        "--data-dir",
        str(args.data_dir),
        "--out",
        str(out),
        "--epochs",
        str(args.full_epochs),
        "--max-seq-len",
        "64",
        "--no-progress",
        "--force",
        *shlex.split(args.distill_args),
    ]
    if args.full_max_train_samples:
        cmd += ["--max-train-samples", str(args.full_max_train_samples)]
    code, peak_gb, wall = _run_with_peak_rss(cmd, args.work / f"{name}.log")
    if code != 0:
        raise SystemExit(f"distillation of {arch} failed (exit {code}), see {args.work / f'{name}.log'}")
    record = json.loads((out / "distill_record.json").read_text())
    dev = evaluate_model(out, get_task("sst2", args.data_dir), "dev", progress=False)
    kept = dev["accuracy"] / teacher_acc
    return {
        "arch": arch,
        "model_dir": str(out),
        "command": " ".join(cmd[1:]),
        "epochs": args.full_epochs,
        "train_examples": record["data"]["train_examples"],
        "eval_during_training": "SST-2 dev",
        "dev_accuracy": dev["accuracy"],
        "teacher": str(args.teacher),
        "teacher_dev_accuracy": teacher_acc,
        "kept_fraction": round(kept, 4),
        "target_fraction": ratio,
        "met": kept >= ratio,
        "history": record["history"],
        "wall_seconds": round(wall, 1),
        "peak_rss_gb": round(peak_gb, 3),
        "peak_target_gb": 6.0,
        "peak_met": peak_gb < 6.0,
    }


def stage_builtin(args: argparse.Namespace) -> dict[str, Any]:
    """The built-in task is non-trivial: a 1-layer student does not match the 6-layer teacher."""
    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.distill import DistillConfig, distill
    from kdnas_deploy.distill.evaluate import evaluate_model
    from kdnas_deploy.tasks import get_task

    task = get_task("builtin")
    teacher = evaluate_model(args.builtin_teacher, task, "dev", progress=False)["accuracy"]
    out: dict[str, Any] = {
        "teacher": str(args.builtin_teacher),
        "teacher_dev_accuracy": teacher,
        "students": [],
    }
    for arch in ("L=1,H=384,A=12,F=1536", "L=3,H=384,A=12,F=1536"):
        cfg = DistillConfig.full(epochs=3, max_seq_len=64)
        t0 = time.perf_counter()
        res = distill(args.builtin_teacher, Architecture.parse(arch), task, config=cfg, progress=False)
        out["students"].append(
            {
                "arch": arch,
                "dev_accuracy": res.score,
                "epochs": 3,
                "wall_seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(json.dumps(out["students"][-1]), flush=True)
    one = out["students"][0]["dev_accuracy"]
    out["one_layer_below_teacher"] = one < teacher
    return out


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    teacher = doc.get("teacher", {}).get("dev_accuracy")
    names, accs = [], []
    if teacher:
        names.append("teacher\nL6 H384")
        accs.append(teacher)
    for key in ("full3", "full2"):
        if key in doc:
            names.append(doc[key]["arch"].replace(",", "\n", 1))
            accs.append(doc[key]["dev_accuracy"])
    ax = axes[0]
    ax.bar(names, [a * 100 for a in accs], color=["#555"] + ["#4a8"] * (len(accs) - 1))
    if teacher:
        ax.axhline(teacher * 97, ls="--", c="r", lw=1, label="97% of teacher")
        ax.axhline(teacher * 95, ls=":", c="orange", lw=1, label="95% of teacher")
        ax.legend(loc="lower right")
    ax.set_ylim(min([80.0] + [a * 100 - 3 for a in accs]), 100)
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title("Teacher vs distilled students")
    ax = axes[1]
    if "proxy" in doc:
        runs = doc["proxy"]["runs"]
        ax.bar(
            [f"{r['arch']}\n{r['run']}".replace(",", " ", 2) for r in runs], [r["wall_seconds"] for r in runs]
        )
        ax.axhline(120, ls="--", c="r", lw=1, label="2-minute target")
        ax.legend()
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylabel("wall time per candidate (s)")
        ax.set_title(f"10% proxy set, cache {doc['proxy']['cache_mb']} MB")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, default=WORK / "distill" / "teacher-sst2", help="SST-2 teacher folder")
    ap.add_argument("--data-dir", type=Path, default=GLUE_DIR)
    ap.add_argument("--work", type=Path, default=WORK / "distill" / "bench")
    ap.add_argument("--out", type=Path, default=RESULTS / "distill_sst2.json")
    ap.add_argument("--builtin-teacher", type=Path, default=WORK / "distill" / "teacher-builtin")
    ap.add_argument("--stages", default="teacher,proxy,full3,full2")
    ap.add_argument("--full-epochs", type=float, default=1.0)
    ap.add_argument("--proxy-repeats", type=int, default=2, help="warm runs per proxy architecture")
    ap.add_argument("--full-max-train-samples", type=int, default=None)
    ap.add_argument("--arch3", default=ARCH_3, help="the 3-layer hidden-384 student of stage full3")
    ap.add_argument("--arch2", default=ARCH_2, help="the 2-layer hidden-256 student of stage full2")
    ap.add_argument("--distill-args", default="", help="extra `kdnas-deploy distill` options for full3/full2")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.data_dir = args.data_dir.resolve()
    _merge(args.out, "machine", _machine())
    stages = args.stages.split(",")
    if "teacher" in stages:
        doc = _merge(args.out, "teacher", stage_teacher(args), keep_old=True)
        print(json.dumps(doc["teacher"]), flush=True)
    if "proxy" in stages:
        _merge(args.out, "proxy", stage_proxy(args))
    teacher_acc = json.loads(args.out.read_text())["teacher"]["dev_accuracy"]
    for key, arch, ratio in (("full3", args.arch3, 0.97), ("full2", args.arch2, 0.95)):
        if key in stages:
            doc = _merge(
                args.out, key, stage_full(args, arch, ratio, teacher_acc), keep_old=True, better=_better_student
            )
            print(json.dumps({k: v for k, v in doc[key].items() if k != "history"}), flush=True)
    if "builtin" in stages:
        _merge(args.out, "builtin", stage_builtin(args))
    plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
