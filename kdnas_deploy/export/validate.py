"""Validation after every export: ONNX Runtime against PyTorch on real tokenized text, and (for int8) the
task metric on the dev set before and after quantization.

Parity runs the same tokenized batches (several batch sizes and lengths, with padding) through the PyTorch
model and the ONNX session and compares logits; a mismatch raises :class:`~kdnas_deploy.errors.ParityError`
for fp32/fp16 and only warns for int8, which is judged by prediction agreement instead
(:mod:`kdnas_deploy.export.agreement`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.errors import DataError, ExportError, MetricDropError, ParityError
from kdnas_deploy.export.agreement import prediction_agreement
from kdnas_deploy.tasks.baselines import trivial_baseline

log = logging.getLogger(__name__)

# Real English sentences of very different lengths, so batches carry real padding.
PARITY_SENTENCES: tuple[str, ...] = (
    "Great film.",
    "The plot drags in the middle, but the last act more than makes up for it.",
    "I would not recommend this restaurant to anyone who values their evening.",
    "A quiet, patient and beautifully acted portrait of a family falling apart and slowly finding its way back.",
    "Terrible.",
    "The battery lasts two days, the screen is sharp, and the camera is better than I expected for the price.",
    "Nothing in this book surprised me, yet I could not put it down until the final page at three in the morning.",
    "Service was slow and the soup arrived cold.",
    "It is neither as funny as it thinks it is nor as clever as its trailer suggested, though the cast tries hard"
    " and a few scenes land; overall a forgettable way to spend two hours on a rainy Sunday afternoon.",
    "Worth every penny.",
    "The instructions were unclear, two screws were missing, and customer support never answered my emails.",
    "An ambitious, sprawling and occasionally confusing story that rewards the viewers who stay with it.",
)
# (batch size, max length, padding): dynamic padding to the longest row and fixed padding to max length
PARITY_CASES: tuple[tuple[int, int, str], ...] = ((1, 16, "longest"), (4, 64, "longest"), (8, 128, "max_length"))


@dataclass(frozen=True)
class ParityTolerance:
    """Allowed logit differences (``|onnx - torch| <= atol + rtol * |torch|``) per precision."""

    atol: float
    rtol: float

    @classmethod
    def for_precision(cls, precision: str) -> ParityTolerance:
        return TOLERANCES[precision]


TOLERANCES: dict[str, ParityTolerance] = {
    "fp32": ParityTolerance(1e-3, 1e-3),
    "fp16": ParityTolerance(5e-2, 5e-2),
    "int8": ParityTolerance(0.5, 0.25),  # warns only: agreement and the dev metric judge an int8 graph
    # warns only, as int8: bf16 keeps 8 bits of mantissa, so logits move by ~1e-2 relative per layer
    "bf16": ParityTolerance(0.1, 0.05),
}
STRICT_PRECISIONS = frozenset({"fp32", "fp16"})  # refused beyond the tolerance


@dataclass(frozen=True)
class ParityCase:
    batch: int
    max_length: int
    padding: str
    padded_fraction: float
    max_abs_diff: float
    mean_abs_diff: float
    argmax_agreement: float
    ok: bool


def onnx_feed(session: Any, encoded: dict[str, Any]) -> dict[str, np.ndarray]:
    """The tokenizer outputs the ONNX graph takes (int64), e.g. without ``token_type_ids`` when absent."""
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in encoded]
    if missing:
        raise ExportError(f"the ONNX graph wants input(s) {', '.join(missing)} that the tokenizer does not produce")
    return {n: np.asarray(encoded[n], dtype=np.int64) for n in names}


def torch_logits(model: Any, encoded: dict[str, Any]) -> np.ndarray:
    import torch

    keys = ("input_ids", "attention_mask", "token_type_ids")
    with torch.inference_mode():
        inputs = {k: torch.as_tensor(np.asarray(encoded[k]), dtype=torch.long) for k in keys if k in encoded}
        return model(**inputs).logits.float().cpu().numpy()


def onnx_logits(session: Any, encoded: dict[str, Any]) -> np.ndarray:
    return np.asarray(session.run(None, onnx_feed(session, encoded))[0], dtype=np.float32)


def check_parity(
    model: Any,
    tokenizer: Any,
    session: Any,
    precision: str = "fp32",
    tolerance: ParityTolerance | None = None,
    cases: tuple[tuple[int, int, str], ...] = PARITY_CASES,
    sentences: tuple[str, ...] = PARITY_SENTENCES,
    strict: bool | None = None,
) -> list[ParityCase]:
    """Compare ONNX and PyTorch logits on every case; raise ``ParityError`` naming the first failing one when
    ``strict`` (default: fp32/fp16), else log a warning for it and go on (int8: agreement judges it)."""
    tol = tolerance or ParityTolerance.for_precision(precision)
    strict = precision in STRICT_PRECISIONS if strict is None else strict
    results: list[ParityCase] = []
    for i, (batch, max_length, padding) in enumerate(cases):
        texts = [sentences[(i * 5 + j) % len(sentences)] for j in range(batch)]
        enc = tokenizer(texts, padding=padding, truncation=True, max_length=max_length, return_tensors="np")
        ref = torch_logits(model, enc)
        got = onnx_logits(session, enc)
        if got.shape != ref.shape:
            raise ParityError(f"ONNX logits have shape {got.shape}, PyTorch {ref.shape} (batch {batch})")
        if not np.all(np.isfinite(got)):
            raise ParityError(f"ONNX logits contain NaN/inf at batch {batch}, length {max_length}")
        diff = np.abs(got - ref)
        ok = bool(np.all(diff <= tol.atol + tol.rtol * np.abs(ref)))
        mask = np.asarray(enc["attention_mask"])
        case = ParityCase(
            batch=batch,
            max_length=int(mask.shape[1]),
            padding=padding,
            padded_fraction=round(float(1.0 - mask.mean()), 4),
            max_abs_diff=float(diff.max()),
            mean_abs_diff=float(diff.mean()),
            argmax_agreement=float((got.argmax(-1) == ref.argmax(-1)).mean()) if ref.shape[-1] > 1 else 1.0,
            ok=ok,
        )
        results.append(case)
        if not ok:
            line = (f"ONNX ({precision}) differs from PyTorch at batch {batch}, length {case.max_length}: max |diff|"
                    f" {case.max_abs_diff:.3g} > atol {tol.atol:g} + rtol {tol.rtol:g}*|logit|")  # fmt: skip
            if strict:
                raise ParityError(line)
            log.warning("warning: %s (not a refusal for %s: judged by prediction agreement)", line, precision)
    return results


def parity_to_dict(cases: list[ParityCase], precision: str, tolerance: ParityTolerance | None = None) -> dict:
    tol = tolerance or ParityTolerance.for_precision(precision)
    return {
        "ok": all(c.ok for c in cases),
        "precision": precision,
        "tolerance": asdict(tol),
        "reference": "pytorch-eager-fp32-cpu",
        "cases": [asdict(c) for c in cases],
    }


# ---------------------------------------------------------------------------------------------- task metric
@dataclass(frozen=True)
class MetricCheck:
    """Dev-set metric of the PyTorch model (``before``) and of the exported graph (``after``)."""

    task: str
    metric: str
    before: float
    after: float
    drop_points: float
    max_drop_points: float
    examples: int
    ok: bool
    forced: bool = False
    baseline: float | None = None  # the trivial baseline of the metric on the same rows
    agreement: dict[str, Any] | None = None  # ONNX vs PyTorch predictions on the same rows

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text_columns(task: Any, column_names: list[str]) -> list[str]:
    fields = list(getattr(task, "text_fields", ()) or [])
    if not fields:
        fields = [c for c in column_names if c not in ("label", "idx")][:2]
    missing = [c for c in fields if c not in column_names]
    if missing:
        raise DataError(f"dev split of {getattr(task, 'name', 'task')} lacks text column(s) {', '.join(missing)}")
    return fields


def _predict(fn: Any, tokenizer: Any, columns: list[list[str]], batch_size: int, max_length: int) -> np.ndarray:
    from tqdm.auto import tqdm

    out = []
    n = len(columns[0])
    for start in tqdm(range(0, n, batch_size), desc="dev metric", leave=False, unit="batch"):
        chunk = [col[start : start + batch_size] for col in columns]
        enc = tokenizer(*chunk, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
        out.append(fn(enc))
    return np.concatenate(out, axis=0)


def check_metric(
    model: Any,
    tokenizer: Any,
    session: Any,
    task_name: str | Any,
    data_dir: str | Path | None = None,
    max_drop_points: float = 1.0,
    force: bool = False,
    batch_size: int = 32,
    max_length: int = 128,
    max_examples: int | None = None,
) -> MetricCheck:
    """Task metric on the dev set: PyTorch before, ONNX after. A drop beyond ``max_drop_points`` (metric x100)
    raises ``ExportError`` unless ``force``. ``task_name`` is a task name (``kdnas_deploy.tasks.get_task``) or a
    task object with ``load_split``, ``compute_metrics``, ``main_metric``, ``num_labels``, ``is_regression``."""
    if isinstance(task_name, str):
        from kdnas_deploy.tasks import get_task

        task = get_task(task_name, data_dir=data_dir)
    else:
        task = task_name
    ds = task.load_split("dev")
    if max_examples:
        ds = ds.select(range(min(max_examples, len(ds))))
    columns = [list(ds[c]) for c in _text_columns(task, ds.column_names)]
    labels = np.asarray(ds["label"])
    n_out = int(getattr(model.config, "num_labels", 0))
    if n_out != int(task.num_labels):
        raise DataError(f"the model has {n_out} output(s) but task {task.name} has {task.num_labels} label(s)")

    def finish(logits: np.ndarray) -> float:
        preds = logits[:, 0] if task.is_regression else logits
        return float(task.compute_metrics(preds, labels)[task.main_metric])

    ref = _predict(lambda e: torch_logits(model, e), tokenizer, columns, batch_size, max_length)
    got = _predict(lambda e: onnx_logits(session, e), tokenizer, columns, batch_size, max_length)
    before, after = finish(ref), finish(got)
    drop = round(100.0 * (before - after), 4)
    ok = drop <= max_drop_points
    base = trivial_baseline([task.main_metric], labels, task.is_regression, task.num_labels)[task.main_metric]
    agreement = prediction_agreement(ref, got, bool(task.is_regression), f"{task.name} dev")
    check = MetricCheck(task.name, task.main_metric, before, after, drop, max_drop_points, len(labels), ok, force,
                        base, agreement)  # fmt: skip
    if not ok and not force:
        raise MetricDropError(
            f"the exported model loses {drop:.2f} points of {task.main_metric} on {task.name} dev "
            f"({100 * before:.2f} -> {100 * after:.2f}; limit {max_drop_points:g}); use --force to accept"
        )
    return check
