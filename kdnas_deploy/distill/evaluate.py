"""Evaluate a sequence-classification folder on a task split with the task's GLUE metric."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas_deploy.distill.data import encode, evaluate_logits, predict
from kdnas_deploy.distill.teachers import check_labels, load_classifier, load_tokenizer, resolve_model
from kdnas_deploy.errors import ConfigError, ModelError
from kdnas_deploy.io import atomic_write_json, check_writable
from kdnas_deploy.runtime.deploy import ONNX_FILE
from kdnas_deploy.tasks.base import canonical_split
from kdnas_deploy.tasks.baselines import task_baseline

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


def is_onnx_folder(path: str | Path) -> bool:
    """A folder with ``model.onnx`` and ``config.json`` (what ``export`` writes)."""
    path = Path(path)
    return path.is_dir() and (path / ONNX_FILE).is_file() and (path / "config.json").is_file()


class OnnxClassifier:
    """An ONNX folder behind the interface :func:`~kdnas_deploy.distill.data.predict` uses (``eval()`` and a
    call on the collated torch tensors that returns ``.logits``), run by optimum's ORT model."""

    def __init__(self, folder: Path, task: Task, threads: int | None = None) -> None:
        import onnxruntime as ort
        import torch
        from optimum.onnxruntime import ORTModelForSequenceClassification

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.model = ORTModelForSequenceClassification.from_pretrained(
                str(folder), file_name=ONNX_FILE, provider="CPUExecutionProvider", session_options=options)
        except Exception as exc:  # noqa: BLE001 - a corrupt graph surfaces as ORT's Fail/InvalidProtobuf, ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"{folder / ONNX_FILE}: cannot load the ONNX model ({first[:200]})") from None
        num_labels = int(getattr(self.model.config, "num_labels", 0) or 0)
        check_labels(num_labels, task, folder)
        session = getattr(self.model, "session", None) or getattr(self.model, "model", None)
        self.inputs = {i.name for i in session.get_inputs()} if session is not None else None

    def eval(self) -> OnnxClassifier:
        return self

    def __call__(self, **batch: Any) -> Any:
        return self.model(**{k: v for k, v in batch.items() if self.inputs is None or k in self.inputs})


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
    onnx = is_onnx_folder(model_dir)
    source = str(model_dir) if onnx else resolve_model(model_dir)
    split = canonical_split(split)
    ds = task.load_split(split)  # first: data that cannot be had (offline, missing) fails before the model loads
    model = OnnxClassifier(Path(source), task) if onnx else load_classifier(source, task)
    tokenizer = load_tokenizer(source)
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
        "runtime": "onnxruntime" if onnx else "pytorch",
        "num_examples": len(enc),
        "max_seq_len": max_seq_len,
        "main_metric": task.main_metric,
        **metrics,
        "baseline": task_baseline(task, enc.labels),
        "eval_seconds": round(seconds, 3),
    }
    if json_path is not None:
        atomic_write_json(json_path, doc)
    return doc
