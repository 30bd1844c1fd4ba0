"""Trivial baselines: what a constant predictor scores on the labels of the split being scored.

- classification: the best constant class for each metric (the majority class for ``accuracy``; always the
  positive class for ``f1``, the constant that maximises it; ``matthews_correlation`` of any constant is 0);
- regression: a constant (the labels' mean), whose ``pearson`` / ``spearmanr`` are 0.

``retained_gain(student, teacher, baseline) = (student - baseline) / (teacher - baseline)`` is the share of the
teacher's gain over the baseline that the student keeps (None when the teacher does not beat the baseline).
A teacher is *weak* when it is within :data:`WEAK_MARGIN` (5 points; 0.05 of a correlation or MCC; every
metric here is on a 0..1 scale) of its baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdnas_deploy.errors import DataError
from kdnas_deploy.tasks.metrics import METRICS, REGRESSION_METRICS

WEAK_MARGIN = 0.05  # 5 points of accuracy/F1, 0.05 of a correlation or MCC (all metrics are 0..1 here)


def trivial_baseline(
    metric_names: Sequence[str], labels: Any, is_regression: bool = False, num_labels: int | None = None
) -> dict[str, float]:
    """Each metric of the best constant predictor on ``labels`` (the split being scored)."""
    arr = np.asarray(labels)
    if arr.size == 0:
        raise DataError("cannot compute a baseline on an empty split")
    out: dict[str, float] = {}
    for name in metric_names:
        if name not in METRICS:
            raise DataError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
        fn = METRICS[name]
        if is_regression:  # a constant has no correlation with anything: 0 (its value does not matter)
            y = arr.astype(np.float64).reshape(-1)
            out[name] = 0.0 if name in REGRESSION_METRICS else float(fn(np.full_like(y, float(y.mean())), y))
            continue
        y = arr.astype(np.int64).reshape(-1)
        classes = set(np.unique(y).tolist()) | set(range(num_labels or 0)) | {1}
        out[name] = max(float(fn(np.full_like(y, c), y)) for c in sorted(classes))
    return out


def task_baseline(task: Any, labels: Any) -> dict[str, float]:
    """:func:`trivial_baseline` of a :class:`~kdnas_deploy.tasks.Task`'s metrics on ``labels``."""
    return trivial_baseline(task.metric_names, labels, task.is_regression, getattr(task, "num_labels", None))


def retained_gain(student: float, teacher: float, baseline: float) -> float | None:
    """``(student - baseline) / (teacher - baseline)``; None when the teacher does not beat the baseline."""
    if teacher <= baseline:
        return None
    return float((student - baseline) / (teacher - baseline))


def retained_gains(
    student: dict[str, float], teacher: dict[str, float], baseline: dict[str, float]
) -> dict[str, float | None]:
    """:func:`retained_gain` of every metric the three share."""
    names = [k for k in student if k in teacher and k in baseline]
    return {k: retained_gain(float(student[k]), float(teacher[k]), float(baseline[k])) for k in names}


@dataclass(frozen=True)
class WeakTeacher:
    """A teacher's main metric, its baseline, the margin it must clear and whether it does."""

    metric: str
    teacher: float
    baseline: float
    margin: float
    weak: bool

    def message(self, task: str = "") -> str:
        where = f" on {task}" if task else ""
        return (
            f"teacher {self.metric} {self.teacher:.4f}{where} is within {self.margin:g} of the trivial baseline "
            f"{self.baseline:.4f} (gain {self.teacher - self.baseline:+.4f}): it has not learned the task"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "teacher": self.teacher, "baseline": self.baseline,
                "margin": self.margin, "weak": self.weak}  # fmt: skip


def weak_teacher(metric: str, teacher: float, baseline: float, margin: float = WEAK_MARGIN) -> WeakTeacher:
    """Whether ``teacher`` is within ``margin`` of ``baseline`` (a tiny epsilon absorbs float rounding)."""
    weak = float(teacher) - float(baseline) < margin - 1e-9
    return WeakTeacher(metric, float(teacher), float(baseline), margin, weak)
