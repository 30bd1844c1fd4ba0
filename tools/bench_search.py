"""Benchmark of issue 5 (KD-NAS search under a latency budget).

Runs ``kdnas-deploy search`` (as a subprocess, so wall time and peak memory are the command's own) for every
strategy and seed with the same evaluation budget, then optionally distills a hand-crafted student of equal
predicted latency (the teacher's first layers, same distillation) and measures teacher and searched student
exported the same way, side by side. Writes JSON (+PNG) with each target of the issue and whether it is met.

Full SST-2 benchmark (from the repository root, alone on the machine; the teacher and a real table must exist)::

    python -m tools.bench_search --teacher TEACHER_DIR \\
        --task sst2 --data-dir ../shared/data/glue --table latency_tables/cpu-minilm-l6-fp32-b1-s128.json \\
        --budget-fraction 0.3333 --strategies kdnas,random --seeds 0,1,2 --preset sst2-bench \\
        --episodes 6 --top-k 3 --proxy-fraction 0.05 --hard-budget --alpha 0 --final-epochs 2 \\
        --headroom 0.15 --final --final-top 3 --handcrafted --measure \\
        --work work_artifacts/search/bench-sst2-h15-prior \\
        --json tools/results/search_sst2_headroom_prior.json --png tools/results/search_sst2_headroom_prior.png

``--headroom H``: the searches fit ``budget x (1 - H)`` while every target is checked against the budget
itself (the table's prediction errs by a few percent, so a winner right at the budget can measure over it).

Cheap mode (built-in task, quick preset): ``--quick`` with a built-in-task teacher. Every search resumes from
its run folder, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import json
import resource
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
from tools._common import ROOT, export_and_bench, kdnas_cli

SCHEMA_VERSION = 1
# Options passed through to every `kdnas-deploy search` call when given (and recorded as overrides).
SEARCH_OPTIONS = ("episodes", "top_k", "candidates", "proxy_fraction", "proxy_epochs", "final_epochs", "heldout_size",
                  "alpha", "beta")


def _children_peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0, 1)


def best_curve(run_dir: Path) -> list[float | None]:
    """Best reward among feasible candidates after each evaluation (in episode/index order)."""
    rows = sorted(read_jsonl(run_dir / "candidates.jsonl"), key=lambda r: (r["episode"], r["index"]))
    out: list[float | None] = []
    best: float | None = None
    for r in rows:
        if r["feasible"] and (best is None or r["reward"] > best):
            best = r["reward"]
        out.append(best)
    return out


def run_one(opts: dict[str, Any], strategy: str, seed: int, budget_ms: float, final: bool) -> dict[str, Any]:
    run_dir = Path(opts["work"]) / f"{strategy}-seed{seed}"
    args = [
        "search",
        "--teacher",
        str(opts["teacher"]),
        "--task",
        opts["task"],
        "--table",
        str(opts["table"]),
        "--budget-ms",
        f"{budget_ms:.6f}",
        "--strategy",
        strategy,
        "--seed",
        str(seed),
        "--preset",
        opts["preset"],
        "--final-top",
        str(opts["final_top"]) if final else "0",
        "--cache-dir",
        str(Path(opts["work"]) / "teacher_cache"),
        "--out",
        str(run_dir),
        "--quiet",
    ]
    if opts["data_dir"]:
        args += ["--data-dir", str(opts["data_dir"])]
    for key in SEARCH_OPTIONS:
        if opts.get(key) is not None:
            args += [f"--{key.replace('_', '-')}", str(opts[key])]
    if opts.get("hard_budget"):
        args.append("--hard-budget")
    if (run_dir / "config.yaml").is_file():
        args.append("--resume")
    click.echo(f"== {strategy} seed {seed}: {' '.join(args[1:])}")
    t0 = time.perf_counter()
    proc = subprocess.run(kdnas_cli(*args), cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise click.ClickException(f"search {strategy} seed {seed} failed (exit {proc.returncode})")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "strategy": strategy,
        "seed": seed,
        "run_dir": str(run_dir),
        "best_reward": summary["best_reward"],
        "best_arch": summary["best"]["arch_str"],
        "best_proxy_metric": summary["best"]["proxy_metric"],
        "best_latency_ms": summary["best"]["latency_ms"],
        "evaluations": summary["evaluations"],
        "evaluation_seconds_total": summary["evaluation_seconds_total"],
        "wall_s_this_call": round(wall, 1),
        "peak_rss_mb_children_so_far": _children_peak_mb(),
        "curve": best_curve(run_dir),
        "final": summary.get("final"),
    }


def compare(runs: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    by = {(r["strategy"], r["seed"]): r["best_reward"] for r in runs}
    seeds = sorted({r["seed"] for r in runs if (a, r["seed"]) in by and (b, r["seed"]) in by})
    diffs = [by[(a, s)] - by[(b, s)] for s in seeds]
    mean_a = statistics.mean(by[(a, s)] for s in seeds) if seeds else None
    mean_b = statistics.mean(by[(b, s)] for s in seeds) if seeds else None
    wins = sum(d > 0 for d in diffs)
    return {
        "strategies": [a, b],
        "seeds": seeds,
        f"{a}_best_reward": [by[(a, s)] for s in seeds],
        f"{b}_best_reward": [by[(b, s)] for s in seeds],
        "mean": {a: mean_a, b: mean_b},
        "diff_per_seed": diffs,
        "wins": wins,
        "met": bool(seeds) and mean_a > mean_b and wins > len(seeds) / 2,  # type: ignore[operator]
    }


def mean_rewards(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per strategy: mean, spread and seeds of the best feasible reward."""
    out = {}
    for strategy in sorted({r["strategy"] for r in runs}):
        values = [r["best_reward"] for r in runs if r["strategy"] == strategy]
        out[strategy] = {"mean": round(statistics.mean(values), 4), "min": min(values), "max": max(values),
                         "seeds": [r["seed"] for r in runs if r["strategy"] == strategy]}  # fmt: skip
    return out


def handcrafted_arch(table: Any, teacher: Architecture, target_ms: float, budget_ms: float) -> Architecture | None:
    """The teacher cut to the depth whose predicted latency is closest to ``target_ms`` (within budget)."""
    options = [Architecture(n, teacher.hidden_size, teacher.num_heads, teacher.ffn_size) for n in table.space.layers]
    options = [a for a in options if a in table.space]
    lat = table.predict(options)
    fits = [(abs(float(ms) - target_ms), a) for a, ms in zip(options, lat, strict=True) if ms <= budget_ms]
    if not fits:
        return None
    return min(fits, key=lambda t: t[0])[1]


def plot(path: Path, runs: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    strategies = sorted({r["strategy"] for r in runs})
    colors = dict(zip(strategies, ["tab:blue", "tab:orange", "tab:green", "tab:red"], strict=False))
    for s in strategies:
        rs = [r for r in runs if r["strategy"] == s]
        for r in rs:
            ys = [y if y is not None else float("nan") for y in r["curve"]]
            ax1.plot(range(1, len(ys) + 1), ys, color=colors[s], alpha=0.35, lw=1)
        n = min(len(r["curve"]) for r in rs)
        # mean over seeds only where every seed has found a feasible candidate
        mean = [statistics.mean(r["curve"][i] for r in rs) if all(r["curve"][i] is not None for r in rs)
                else float("nan") for i in range(n)]  # fmt: skip
        ax1.plot(range(1, n + 1), mean, color=colors[s], lw=2.2, label=f"{s} (mean of {len(rs)} seeds)")
        ax2.scatter([r["seed"] for r in rs], [r["best_reward"] for r in rs], color=colors[s], s=50, label=s)
    ax1.set_xlabel("proxy evaluations")
    ax1.set_ylabel("best feasible reward so far")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.set_xlabel("seed")
    ax2.set_xticks(sorted({r["seed"] for r in runs}))
    ax2.set_ylabel("final best reward")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def final_targets(
    o: dict[str, Any], doc: dict[str, Any], targets: dict[str, Any], first: dict[str, Any],
    table: Any, task: Any, teacher: Architecture, budget_ms: float,
) -> None:  # fmt: skip
    """Targets on the winner of the first kdnas seed: kept accuracy, time, memory, hand-crafted, speedup."""
    from kdnas_deploy.search.evaluator import evaluate_model_dir

    win = first["final"]["winner"]
    metric = task.main_metric
    teacher_dev = evaluate_model_dir(o["teacher"], task, "dev")
    arch = Architecture.from_dict(win["arch"])
    student_ms = float(table.predict([arch])[0])
    doc["final"] = {
        "winner": win, "teacher_dev_metrics": teacher_dev, "student_dir": first["final"]["student_dir"],
        "student_latency_ms": student_ms, "predicted_speedup": doc["teacher_latency_ms"] / student_ms,
    }  # fmt: skip
    kept = win["dev_metrics"][metric] / teacher_dev[metric]
    targets["kept_fraction_of_teacher"] = {"value": kept, "target": 0.97, "met": kept >= 0.97}
    parts_s = first["evaluation_seconds_total"] + float(win.get("seconds", 0.0))
    hours = max(first["wall_s_this_call"], parts_s) / 3600  # wall is partial when the run was resumed
    targets["search_plus_final_hours"] = {"value": hours, "target": 2.0, "met": hours <= 2.0,
                                          "wall_s_this_call": first["wall_s_this_call"],
                                          "evaluations_plus_final_s": parts_s}  # fmt: skip
    gb = first["peak_rss_mb_children_so_far"] / 1024
    targets["peak_memory_gb"] = {"value": gb, "target": 8.0, "met": gb <= 8.0}
    if o["handcrafted"]:
        res = handcrafted(o, first, table, teacher, student_ms, budget_ms)
        doc["handcrafted"] = res
        if "dev_metrics" in res:
            gain = 100 * (win["dev_metrics"][metric] - res["dev_metrics"][metric])
            targets["beats_handcrafted_points"] = {"value": gain, "target": 1.0, "met": gain >= 1.0}
    if o["measure"]:
        models = {"teacher": str(o["teacher"]), "student": first["final"]["student_dir"]}
        m = export_and_bench(models, Path(o["work"]), 1, 128, o["threads"], o["bench_rounds"])
        doc["measured"] = m
        if "speedup" in m:
            targets["measured_speedup"] = {"value": m["speedup"], "target": 3.0, "met": m["speedup"] >= 3.0}
            targets["kept_97pct_at_3x"] = {"met": kept >= 0.97 and m["speedup"] >= 3.0}


def handcrafted(
    o: dict[str, Any],
    first: dict[str, Any],
    table: Any,
    teacher: Architecture,
    student_ms: float,
    budget_ms: float,
) -> dict[str, Any]:
    """The teacher cut to equal predicted latency, distilled with the searched student's split and recipe."""
    from kdnas_deploy.search.evaluator import DistillEvaluator
    from kdnas_deploy.search.executor import candidate_seed

    hc = handcrafted_arch(table, teacher, student_ms, budget_ms)
    if hc is None:
        return {"skipped": "no truncated teacher (teacher shape, fewer layers) fits the budget"}
    cfg = _yaml(Path(first["run_dir"]) / "config.yaml")["search"]
    work = Path(o["work"])
    ev = DistillEvaluator(
        teacher=str(o["teacher"]), task=o["task"], data_dir=cfg["data_dir"],
        proxy_fraction=cfg["proxy_fraction"], heldout_size=cfg["heldout_size"], split_seed=cfg["seed"],
        cache_dir=str(work / "teacher_cache"), final_epochs=cfg["final_epochs"],
    )  # fmt: skip
    hc_dir = work / "handcrafted" / hc.short().replace(",", "_").replace("=", "")
    done = hc_dir / "final.json"
    if done.is_file():
        return json.loads(done.read_text())
    res = ev.final(hc, candidate_seed(cfg["seed"], hc), hc_dir / "model")
    res.update(arch=hc.to_dict(), arch_str=hc.short(), latency_ms=float(table.predict([hc])[0]))
    atomic_write_json(done, res)
    return res


@click.command()
@click.option("--teacher", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--task", default=None, help="sst2 (default) or builtin (default with --quick).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--table", required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--budget-fraction",
    type=float,
    default=1 / 3,
    show_default=True,
    help="Budget as a fraction of the teacher's predicted latency.",
)
@click.option("--headroom", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True,
              help="Searches fit budget x (1 - headroom); the targets are checked against the budget itself.")
@click.option("--strategies", default="kdnas,random", show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--preset", default=None, help="Search preset (sst2-bench; quick with --quick).")
@click.option("--quick", is_flag=True, help="Cheap mode: built-in task, quick preset.")
@click.option("--episodes", type=int, default=None)
@click.option("--top-k", type=int, default=None)
@click.option("--candidates", type=int, default=None)
@click.option("--proxy-fraction", type=float, default=None)
@click.option("--proxy-epochs", type=float, default=None)
@click.option("--final-epochs", type=float, default=None)
@click.option("--heldout-size", type=int, default=None)
@click.option("--hard-budget", is_flag=True)
@click.option("--alpha", type=float, default=None, help="Reward latency exponent within budget (search default -0.07).")
@click.option("--beta", type=float, default=None, help="Reward latency exponent beyond budget (search default -0.07).")
@click.option("--final/--no-final", default=False, help="Distill the winner of the first kdnas seed fully.")
@click.option("--final-top", type=int, default=1, show_default=True,
              help="With --final: how many of its best candidates are distilled fully (the held-out slice picks).")
@click.option("--handcrafted/--no-handcrafted", default=False, help="Also distill the truncated teacher.")
@click.option("--measure/--no-measure", default=False, help="Export teacher+student (O2) and bench them.")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--bench-rounds", type=int, default=40, show_default=True,
              help="Interleaved rounds of 5 calls per model when measuring teacher and student.")
@click.option("--work", required=True, type=click.Path(path_type=Path), help="Folder for the run folders.")
@click.option("--json", "json_out", required=True, type=click.Path(path_type=Path))
@click.option("--png", "png_out", type=click.Path(path_type=Path), default=None)
def main(**o: Any) -> None:
    from kdnas_deploy.search.budget import load_table
    from kdnas_deploy.search.evaluator import load_task, teacher_architecture

    o["task"] = o["task"] or ("builtin" if o["quick"] else "sst2")
    o["preset"] = o["preset"] or ("quick" if o["quick"] else "sst2-bench")
    work = Path(o["work"])
    work.mkdir(parents=True, exist_ok=True)
    table = load_table(o["table"])
    task = load_task(o["task"], str(o["data_dir"]) if o["data_dir"] else None)
    teacher = teacher_architecture(o["teacher"], task)
    teacher_ms = float(table.predict([teacher])[0])
    budget_ms = teacher_ms * o["budget_fraction"]
    search_ms = budget_ms * (1.0 - o["headroom"])  # the searches fit this; targets are checked on budget_ms
    click.echo(f"teacher {teacher}: {teacher_ms:.3f} ms predicted; budget {budget_ms:.3f} ms"
               + (f"; searches fit {search_ms:.3f} ms ({o['headroom']:.0%} headroom)" if o["headroom"] else ""))
    strategies = [s.strip() for s in o["strategies"].split(",") if s.strip()]
    seeds = [int(s) for s in o["seeds"].split(",")]
    t_all = time.perf_counter()
    runs = []
    for seed in seeds:  # interleave strategies per seed so a partial benchmark stays a fair comparison
        for s in strategies:
            runs.append(run_one(o, s, seed, search_ms, final=o["final"] and s == "kdnas" and seed == seeds[0]))
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "task": o["task"],
        "preset": o["preset"],
        "table": str(o["table"]),
        "table_device": getattr(table, "device", None),
        "table_precision": getattr(table, "precision", None),
        "teacher": str(o["teacher"]),
        "teacher_arch": teacher.short(),
        "teacher_latency_ms": teacher_ms,
        "budget_fraction": o["budget_fraction"],
        "budget_ms": budget_ms,
        "headroom": o["headroom"],
        "search_budget_ms": search_ms,
        "overrides": {k: o[k] for k in (*SEARCH_OPTIONS, "hard_budget")},
        "runs": runs,
    }
    targets: dict[str, Any] = {}
    if "kdnas" in strategies and "random" in strategies:
        doc["kdnas_vs_random"] = compare(runs, "kdnas", "random")
        cmp = doc["kdnas_vs_random"]
        targets["kdnas_beats_random"] = {"value": cmp["mean"], "wins": cmp["wins"], "met": cmp["met"]}
    doc["mean_best_reward"] = mean_rewards(runs)
    for peer in [s for s in strategies if s not in ("kdnas", "random")] if "kdnas" in strategies else []:
        doc[f"kdnas_vs_{peer}"] = cmp = compare(runs, "kdnas", peer)
        if cmp["seeds"]:  # issue 21: kdnas's best reward at least the peer's on average (same budget, reward, log)
            targets[f"kdnas_at_least_{peer.replace('-', '_')}"] = {
                "value": cmp["mean"], "target": f"mean kdnas >= mean {peer}", "wins": cmp["wins"],
                "met": bool(cmp["mean"]["kdnas"] >= cmp["mean"][peer])}  # fmt: skip
    first = next((r for r in runs if r["strategy"] == "kdnas" and r["seed"] == seeds[0] and r["final"]), None)
    if first:
        final_targets(o, doc, targets, first, table, task, teacher, budget_ms)
    doc["targets"] = targets
    doc["benchmark_wall_s_this_call"] = round(time.perf_counter() - t_all, 1)
    atomic_write_json(o["json_out"], doc)
    if o["png_out"]:
        plot(
            Path(o["png_out"]),
            runs,
            f"{o['task']}: best feasible reward vs proxy evaluations (budget "
            f"{budget_ms:.2f} ms = {o['budget_fraction']:.2f} x teacher)",
        )
    click.echo(json.dumps(targets, indent=2))


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


if __name__ == "__main__":
    try:
        main(standalone_mode=True)
    except KdnasError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
