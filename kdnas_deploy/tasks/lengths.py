"""A task's real input lengths: its texts, their token lengths under a tokenizer, and the length a budget uses.

Served traffic is not 128 padded tokens: SST-2 dev sentences are about 25 tokens at the median. These helpers
tokenise a split once (the tokenizer is a ``transformers`` tokenizer, passed in) and pick the length a latency
budget applies to: a quantile (p95 by default) or the mean, rounded up to a multiple of 8 and clamped into a
latency table's sequence grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kdnas_deploy.errors import DataError
from kdnas_deploy.tasks.base import Task

ROUND_TO = 8  # lengths a budget uses are multiples of 8 (what a padded serving bucket would be)
BERT_MAX_LEN = 512


def task_texts(task: Task, split: str = "dev", limit: int | None = None) -> list[tuple[str, ...]]:
    """The texts of ``split`` (one tuple per row: one or two fields); DataError when the task has no text
    column (no text fields, or a text field whose values are not strings)."""
    if not task.text_fields:
        raise DataError(f"task {task.name!r} has no text column")
    ds = task.load_split(split)
    if limit is not None:
        ds = ds.select(range(min(int(limit), len(ds))))
    cols = [ds[c] for c in task.text_fields]
    for name, col in zip(task.text_fields, cols, strict=True):
        if not all(isinstance(v, str) for v in col[:50]):
            raise DataError(f"task {task.name!r}: column {name!r} is not a text column (values are not strings)")
    return [tuple(row) for row in zip(*cols, strict=True)]


def token_lengths(tokenizer: Any, texts: Sequence[tuple[str, ...]], max_length: int = BERT_MAX_LEN,
                  chunk: int = 4096) -> np.ndarray:  # fmt: skip
    """Token count (special tokens included, truncated at ``max_length``) of every text, unpadded."""
    out: list[int] = []
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        args = [list(c) for c in zip(*part, strict=True)]
        enc = tokenizer(*args, truncation=True, max_length=max_length, padding=False)
        out.extend(len(ids) for ids in enc["input_ids"])
    return np.asarray(out, dtype=np.int64)


def length_stats(lengths: np.ndarray) -> dict[str, float | int]:
    """Summary of a length distribution: count, mean, p50, p90, p95, p99, max."""
    arr = np.asarray(lengths, dtype=float)
    if arr.size == 0:
        raise DataError("no texts to measure lengths of")
    q = {f"p{p}": int(math.ceil(float(np.percentile(arr, p)))) for p in (50, 90, 95, 99)}
    return {"count": int(arr.size), "mean": round(float(arr.mean()), 2), **q, "max": int(arr.max())}


def parse_quantile(value: Any) -> float | str:
    """``mean`` or a quantile in (0, 1] (``0.95``); DataError otherwise."""
    if isinstance(value, str) and value.strip().lower() == "mean":
        return "mean"
    try:
        q = float(value)
    except (TypeError, ValueError):
        raise DataError(f"seq quantile must be 'mean' or a number in (0, 1], got {value!r}") from None
    if not (math.isfinite(q) and 0 < q <= 1):
        raise DataError(f"seq quantile must be 'mean' or a number in (0, 1], got {value!r}")
    return q


def pick_seq(lengths: np.ndarray, quantile: float | str = 0.95, grid: Sequence[int] | None = None) -> int:
    """The length a budget applies to: the ``quantile`` (or ``'mean'``) of ``lengths``, rounded up to a
    multiple of 8 and clamped into ``[min(grid), max(grid)]`` when a grid is given."""
    arr = np.asarray(lengths, dtype=float)
    if arr.size == 0:
        raise DataError("no texts to pick a sequence length from")
    q = parse_quantile(quantile)
    raw = float(arr.mean()) if q == "mean" else float(np.quantile(arr, float(q)))
    seq = max(ROUND_TO, int(math.ceil(raw / ROUND_TO)) * ROUND_TO)
    if grid:
        seq = min(max(seq, min(grid)), max(grid))
    return int(seq)


def task_length_profile(task: Task, tokenizer: Any, split: str = "train", quantile: float | str = 0.95,
                        grid: Sequence[int] | None = None, limit: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Tokenise ``split`` once: its length statistics and the chosen length (``seq``) for budgets."""
    lengths = token_lengths(tokenizer, task_texts(task, split, limit))
    q = parse_quantile(quantile)
    return {"split": split, "quantile": q, "seq": pick_seq(lengths, q, grid), "grid": list(grid) if grid else None,
            "lengths": length_stats(lengths)}  # fmt: skip


def clamp_to_grid(seq: int, grid: Sequence[int]) -> int:
    """``seq`` clamped into ``[min(grid), max(grid)]`` (a table does not extrapolate beyond its grid)."""
    return int(min(max(int(seq), min(grid)), max(grid)))


def auto_seq(task_name: str, data_dir: str | None, tokenizer_dir: str, quantile: float | str = 0.95,
             grid: Sequence[int] | None = None, split: str = "train") -> dict[str, Any]:  # fmt: skip
    """``seq: auto``: tokenise the task's ``split`` once with the tokenizer in ``tokenizer_dir`` (the
    teacher's); returns :func:`task_length_profile` (``seq``: the chosen length, clamped into ``grid``)."""
    from transformers import AutoTokenizer

    from kdnas_deploy.tasks import get_task

    task = get_task(task_name, data_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"seq auto: no usable tokenizer in {tokenizer_dir} ({str(exc).splitlines()[0]})") from None
    return task_length_profile(task, tokenizer, split, quantile, grid)
