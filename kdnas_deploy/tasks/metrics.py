"""GLUE metrics by their usual names: accuracy, f1, matthews_correlation, pearson, spearmanr."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kdnas_deploy.errors import DataError

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _as_class_predictions(predictions: Any) -> np.ndarray:
    arr = np.asarray(predictions)
    if arr.ndim == 2:  # logits
        return arr.argmax(axis=-1)
    return arr.astype(np.int64)


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((preds == labels).mean())


def f1(preds: np.ndarray, labels: np.ndarray) -> float:
    tp = float(((preds == 1) & (labels == 1)).sum())
    fp = float(((preds == 1) & (labels != 1)).sum())
    fn = float(((preds != 1) & (labels == 1)).sum())
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def matthews_correlation(preds: np.ndarray, labels: np.ndarray) -> float:
    classes = np.union1d(np.unique(preds), np.unique(labels))
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    cm = np.zeros((k, k), dtype=np.float64)
    for p, t in zip(preds, labels, strict=True):
        cm[index[t], index[p]] += 1
    t_sum, p_sum = cm.sum(axis=1), cm.sum(axis=0)
    n, c = cm.sum(), np.trace(cm)
    cov_ytyp = c * n - float(t_sum @ p_sum)
    cov_ypyp = n * n - float(p_sum @ p_sum)
    cov_ytyt = n * n - float(t_sum @ t_sum)
    denom = np.sqrt(cov_ytyt * cov_ypyp)
    return float(cov_ytyp / denom) if denom else 0.0


def pearson(preds: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import pearsonr

    if np.std(preds) == 0 or np.std(labels) == 0:
        return 0.0
    return float(pearsonr(preds, labels)[0])


def spearmanr(preds: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import spearmanr as _spearmanr

    if np.std(preds) == 0 or np.std(labels) == 0:
        return 0.0
    return float(_spearmanr(preds, labels)[0])


METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearmanr": spearmanr,
}
REGRESSION_METRICS = frozenset({"pearson", "spearmanr"})


def compute_metrics(
    names: Sequence[str], predictions: Any, labels: Any, is_regression: bool = False
) -> dict[str, float]:
    """Compute ``names`` from predictions (class ids, logits, or scores for regression) and labels."""
    labels_arr = np.asarray(labels)
    if is_regression:
        preds = np.asarray(predictions, dtype=np.float64).reshape(len(labels_arr), -1)[:, 0]
        labels_arr = labels_arr.astype(np.float64)
    else:
        preds = _as_class_predictions(predictions)
        labels_arr = labels_arr.astype(np.int64)
    if len(preds) != len(labels_arr):
        raise DataError(f"{len(preds)} predictions for {len(labels_arr)} labels")
    if len(labels_arr) == 0:
        raise DataError("cannot compute metrics on an empty split")
    out: dict[str, float] = {}
    for name in names:
        if name not in METRICS:
            raise DataError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
        out[name] = METRICS[name](preds, labels_arr)
    return out
