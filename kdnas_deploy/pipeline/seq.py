"""``latency.seq: auto``: the run prices candidates at the task's real input length, not 128 padded tokens.

The task's training split is tokenised once with the teacher's tokenizer; the budget applies to the p95 token
length (``latency.seq_quantile``: another quantile, or ``mean``), rounded up to a multiple of 8 and clamped
into the latency tables' sequence grid. Tables are looked up (or built, over :data:`AUTO_GRID`) for that
length; search, export and bench then use it, and the choice is written to ``summary.json`` and the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import TableError
from kdnas_deploy.pipeline.config import PipelineConfig
from kdnas_deploy.tasks.lengths import auto_seq, clamp_to_grid

AUTO_GRID = (32, 64, 128)  # the grid a run builds when no table matches and latency.seq is auto


def is_auto(config: PipelineConfig) -> bool:
    return config.latency.seq == "auto"


def tokenizer_dir(config: PipelineConfig) -> str:
    """Where the teacher's tokenizer is: the given teacher folder, else the backbone it is fine-tuned from."""
    if config.teacher.path:
        return str(config.teacher.path)
    from kdnas_deploy.distill.teachers import resolve_model

    return str(resolve_model(config.teacher.finetune_from))


def length_profile(config: PipelineConfig) -> dict[str, Any]:
    """The training split's length distribution and the (unclamped) length for budgets."""
    return auto_seq(config.task.name, config.task.data_dir, tokenizer_dir(config), config.latency.seq_quantile)


def lookup_seq(config: PipelineConfig, profile: dict[str, Any] | None) -> int:
    """The length tables are matched at: the configured one, or the auto length clamped into :data:`AUTO_GRID`."""
    if profile is None:
        return int(config.latency.seq)  # type: ignore[arg-type]
    return clamp_to_grid(int(profile["seq"]), AUTO_GRID)


def grid_of(tables: Sequence[str | Path]) -> tuple[int, int]:
    """The sequence range every table covers (TableError when they share none)."""
    from kdnas_deploy.latency.table import LatencyTable

    grids = [LatencyTable.load(t).seq_lens for t in tables]
    lo, hi = max(g[0] for g in grids), min(g[-1] for g in grids)
    if lo > hi:
        raise TableError(f"latency.seq auto: the tables' sequence grids {[list(g) for g in grids]} do not overlap")
    return lo, hi


def chosen_seq(config: PipelineConfig, profile: dict[str, Any] | None, tables: Sequence[str | Path]) -> int:
    """The length the run prices, exports and benches at: the auto length clamped into every table's grid."""
    if profile is None:
        return int(config.latency.seq)  # type: ignore[arg-type]
    return clamp_to_grid(int(profile["seq"]), grid_of(tables))


def seq_facts(config: PipelineConfig, profile: dict[str, Any] | None, seq: int) -> dict[str, Any]:
    """What summary.json records about the length: the mode, the chosen length, and the distribution."""
    if profile is None:
        return {"mode": "fixed", "seq": seq}
    lengths = profile["lengths"]
    return {"mode": "auto", "seq": seq, "quantile": profile["quantile"], "split": profile["split"],
            "unclamped_seq": profile["seq"], "lengths": lengths}  # fmt: skip


def seq_line(facts: dict[str, Any]) -> str:
    """The report's line about the length."""
    if facts["mode"] == "fixed":
        return f"{facts['seq']} tokens (fixed, latency.seq)"
    q = facts["quantile"]
    what = "mean" if q == "mean" else f"p{round(100 * float(q), 1):g}"
    lengths = facts["lengths"]
    return (f"{facts['seq']} tokens (auto: {what} of the {facts['split']} split's token lengths, rounded up to 8 "
            f"and clamped into the table grid; median {lengths['p50']}, p95 {lengths['p95']}, "
            f"max {lengths['max']} over {lengths['count']} texts)")  # fmt: skip
