"""Evaluate a sequence-classification folder on a task split with the task's GLUE metric."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas_deploy.distill.data import encode, evaluate_logits, predict
from kdnas_deploy.distill.teachers import load_classifier, load_tokenizer, resolve_model
from kdnas_deploy.errors import ConfigError
from kdnas_deploy.io import atomic_write_json, check_writable
from kdnas_deploy.tasks.base import canonical_split

if TYPE_CHECKING:  # pragma: no cover
    from kdnas_deploy.tasks import Task

METRICS_SCHEMA_VERSION = 1
DEFAULT_MAX_SEQ_LEN = 128


def _recorded_max_seq_len(model_dir: Path) -> int | None:
    for name in ("distill_record.json", "teacher_record.json"):
        f = model_dir / name
        if f.is_file():
            try:
                return int(json.loads(f.read_text())["config"]["max_seq_len"])
            except (KeyError, ValueError, TypeError, json.JSONDecodeError):
                return None
    return None


def evaluate_model(
    model_dir: str | Path,
    task: Task,
    split: str = "dev",
    max_seq_len: int | None = None,
    batch_size: int = 128,
    json_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics of ``model_dir`` on ``task``'s ``split``; written to ``json_path`` when given (checked, with
    the numbers and the model, before the evaluation runs)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 1 << 20:
        raise ConfigError(f"batch size must be an integer in [1, {1 << 20}], got {batch_size!r}")
    if max_seq_len is not None and (isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int)
                                    or not 2 <= max_seq_len <= 1 << 16):  # fmt: skip
        raise ConfigError(f"max sequence length must be an integer in [2, {1 << 16}], got {max_seq_len!r}")
    if json_path is not None:
        check_writable(json_path, "--json")
    source = resolve_model(model_dir)
    split = canonical_split(split)
    model = load_classifier(source, task)
    tokenizer = load_tokenizer(source)
    ds = task.load_split(split)
    if max_seq_len is None:
        max_seq_len = _recorded_max_seq_len(Path(source)) or DEFAULT_MAX_SEQ_LEN
    enc = encode(ds, task, tokenizer, max_seq_len)
    t0 = time.perf_counter()
    logits = predict(model, enc, batch_size, progress=progress, desc=f"evaluate {task.name}")
    seconds = time.perf_counter() - t0
    metrics = evaluate_logits(task, logits, enc.labels)
    doc: dict[str, Any] = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "model": str(model_dir),
        "task": task.name,
        "split": split,
        "num_examples": len(enc),
        "max_seq_len": max_seq_len,
        "main_metric": task.main_metric,
        **metrics,
        "eval_seconds": round(seconds, 3),
    }
    if json_path is not None:
        atomic_write_json(json_path, doc)
    return doc
