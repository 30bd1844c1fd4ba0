"""``kdnas-deploy search``: KD-NAS under one or several latency budgets.

A thin layer: the options become a :class:`~kdnas_deploy.search.config.SearchConfig` (preset, then every
option given on top) and :func:`~kdnas_deploy.search.api.run_search` runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kdnas_deploy.cli.options import (
    Count,
    Count0,
    Epochs,
    Finite,
    NonNegativeFloat,
    PositiveFloat,
    Probability,
    Seed,
    batch_option,
    data_dir_option,
    out_option,
    task_option,
)
from kdnas_deploy.cli.seq_options import seq_auto_option, seq_quantile_option
from kdnas_deploy.errors import SearchError
from kdnas_deploy.search.config import PRESETS, REWARD_METRICS, ExecutorConfig, SearchSettings
from kdnas_deploy.search.executors import EXECUTORS
from kdnas_deploy.search.strategies import STRATEGIES

RAY_OPTIONS = {"address": "ray_address", "cpus_per_candidate": "cpus_per_candidate",
               "gpus_per_candidate": "gpus_per_candidate"}  # fmt: skip
SETTINGS = ("strategy", "episodes", "candidates", "top_k", "proxy_fraction", "heldout_size", "proxy_epochs",
            "final_epochs", "final_top", "batch", "seq", "seed", "proxy_min_rows", "proxy_min_steps",
            "final_min_steps", "on_degenerate", "max_seq_len")  # fmt: skip


@click.command(name="search")
@click.option("--teacher", required=True, type=click.Path(path_type=Path), help="Fine-tuned teacher (HF folder).")
@task_option()
@data_dir_option()
@click.option("--table", type=click.Path(path_type=Path), default=None, help="Latency table JSON (with --budget-ms).")
@click.option("--budget-ms", type=PositiveFloat, default=None, help="Latency budget in ms for --table.")
@click.option(
    "--budget",
    "budgets",
    multiple=True,
    metavar="TABLE.json:MS",
    help="A budget on another table (repeatable): a candidate must meet every budget.",
)
@click.option(
    "--headroom",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Share of every budget kept free for prediction error and machine drift: the search fits"
    " budget x (1 - headroom); the README recommends 0.15.",
)
@click.option("--space", default=None, help="Expected search space (preset or YAML); must match the tables'.")
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="default",
    show_default=True,
    help="Named preset of the search settings (the options below override it).",
)
@click.option(
    "--strategy",
    type=click.Choice(list(STRATEGIES)),
    default=None,
    help="Search strategy [default: the preset's, kdnas].",
)
@click.option("--episodes", type=Count, default=None, help="Episodes [default: the preset's, 8].")
@click.option("--candidates", type=Count, default=None, help="Members the controller scores per episode (200).")
@click.option("--top-k", type=Count, default=None, help="Candidates distilled per episode (4).")
@click.option("--proxy-fraction", type=Probability, default=None, help="Share of the train split used as proxy (0.1).")
@click.option("--heldout-size", type=Count, default=None, help="Train rows held out for the reward (1000).")
@click.option("--proxy-epochs", type=Epochs, default=None, help="Override the proxy distillation epochs.")
@click.option("--proxy-min-rows", type=click.IntRange(0), default=None, help="Proxy set rows at least (0: off).")
@click.option("--proxy-min-steps", type=click.IntRange(0), default=None, help="Steps per candidate, at least.")
@click.option(
    "--on-degenerate",
    type=click.Choice(["escalate", "stop", "warn"]),
    default=None,
    help="Tied / at-baseline candidates: re-evaluate at 2x the proxy budget then stop (escalate, default), "
    "stop at once, or only warn.",
)
@click.option("--max-seq-len", type=click.IntRange(8, 512), default=None,
              help="Token length of the proxy and final distillations (default: the presets').")
@click.option("--final-epochs", type=Epochs, default=None, help="Override the final distillation epochs.")
@click.option(
    "--final-min-steps", type=click.IntRange(0), default=None,
    help="Optimizer steps of the final distillation, at least (its epochs raised on a small train split).",
)  # fmt: skip
@click.option(
    "--metric",
    type=click.Choice(list(REWARD_METRICS)),
    default="task",
    show_default=True,
    help="Reward metric: task metric on the held-out train slice, or 1 - normalised KD loss.",
)
@click.option("--alpha", type=Finite, default=-0.07, show_default=True, help="Latency exponent within budget.")
@click.option("--beta", type=Finite, default=-0.07, show_default=True, help="Latency exponent beyond budget.")
@click.option("--hard-budget", is_flag=True, help="Never distill a candidate over any budget.")
@click.option("--final-top", type=Count0, default=None, help="Best architectures distilled fully (1; 0 skips).")
@batch_option(default=None, help="Batch size the tables predict at [default: the table's].")
@seq_auto_option(help="Sequence length the tables predict at, or 'auto': the task's p95 token length (its train"
                 " split tokenised with the teacher's tokenizer, rounded up to 8, clamped into the grid)"
                 " [default: the table's first].")
@seq_quantile_option()
@click.option("--seed", type=Seed, default=None, help="Search seed [default: the preset's, 0].")
@click.option(
    "--executor",
    type=click.Choice(list(EXECUTORS)),
    default="local",
    show_default=True,
    help="Where candidates run (ray: pip install 'kdnas-deploy[ray]').",
)
@click.option(
    "--ray-address",
    default=None,
    help="Ray cluster to join with --executor ray ('auto', HOST:PORT; default RAY_ADDRESS or a local one).",
)
@click.option(
    "--cpus-per-candidate",
    type=PositiveFloat,
    default=None,
    help="CPUs of one Ray task [default: the torch threads of an in-process run, capped at the largest node].",
)
@click.option("--gpus-per-candidate", type=NonNegativeFloat, default=None, help="GPUs of one Ray task (0).")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Teacher-output cache (default RUN_DIR/teacher_cache; share it between runs).",
)
@out_option(help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue the search in --out (its configuration must match).")
@click.option("--brief", "--quiet", "brief", is_flag=True, help="Only the per-episode lines (no line per candidate).")
def search(**kw: Any) -> None:
    """KD-NAS: search the student that distills best under a latency budget, then distill it fully.

    \b
    Example:
      kdnas-deploy search --teacher teacher-sst2 --task sst2 --data-dir ../shared/data/glue \\
        --table latency_tables/cpu-minilm-l6-fp32-b1-s128.json --budget-ms 2.8 --headroom 0.15 --out runs/sst2
    """
    from kdnas_deploy.search.api import resolve_budget_pairs, run_search, search_config

    brief = bool(kw["brief"])

    def echo(line: str) -> None:
        if not (brief and line.startswith("  ")):
            click.echo(line)

    executor = _executor(kw)  # option errors first, before any table is read
    pairs = resolve_budget_pairs(kw["table"], kw["budget_ms"], kw["budgets"])
    if kw["seq"] == "auto":
        kw["seq"] = _auto_seq(kw, [p for p, _ in pairs])
    config = search_config(teacher=kw["teacher"], task=str(kw["task_name"]), budgets=pairs, settings=_settings(kw),
                           data_dir=kw["data_dir"], headroom=kw["headroom"], echo=echo)  # fmt: skip
    summary = run_search(config, kw["out"], space=kw["space"], executor=executor, cache_dir=kw["cache_dir"],
                         resume=bool(kw["resume"]), echo=echo)  # fmt: skip
    best = summary["best"]
    click.echo(
        f"best: {best['arch_str']} reward {best['reward']:.4f} proxy {best['proxy_metric']:.4f}"
        f" latency {best['latency_ms']}"
    )
    final = summary.get("final")
    if final:
        click.echo(f"student: {final['student_dir']} dev {final['winner'].get('dev_metrics')}")


def _settings(kw: dict[str, Any]) -> SearchSettings:
    """The preset's settings with every option given on the command line on top."""
    data = PRESETS.merged(kw["preset"], **{k: kw[k] for k in SETTINGS})
    reward = {"alpha": kw["alpha"], "beta": kw["beta"], "hard_budget": bool(kw["hard_budget"]), "metric": kw["metric"]}
    data["reward"] = {**data.get("reward", {}), **reward}
    return SearchSettings.from_dict(data)


def _auto_seq(kw: dict[str, Any], tables: list[Any]) -> int:
    """``--seq auto``: the task's length quantile, clamped into the tables' common grid."""
    from kdnas_deploy.pipeline.seq import grid_of
    from kdnas_deploy.tasks.lengths import auto_seq

    data_dir = str(kw["data_dir"]) if kw["data_dir"] else None
    prof = auto_seq(str(kw["task_name"]), data_dir, str(kw["teacher"]), kw["seq_quantile"], grid_of(tables))
    lengths = prof["lengths"]
    click.echo(f"--seq auto: {prof['seq']} tokens (quantile {prof['quantile']} of {lengths['count']} train texts;"
               f" median {lengths['p50']}, p95 {lengths['p95']})")  # fmt: skip
    return int(prof["seq"])


def _executor(kw: dict[str, Any]) -> ExecutorConfig:
    options = {k: kw[o] for k, o in RAY_OPTIONS.items() if kw.get(o) is not None}
    if options and kw["executor"] != "ray":
        raise SearchError("--ray-address, --cpus-per-candidate and --gpus-per-candidate need --executor ray")
    return ExecutorConfig(kw["executor"], options)


__all__ = ["search"]
