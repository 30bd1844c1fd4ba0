"""The ``Task`` value type: a named data source plus its label space and GLUE metric."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdnas_deploy.errors import DataError
from kdnas_deploy.tasks.metrics import compute_metrics

if TYPE_CHECKING:  # pragma: no cover
    import datasets

SPLIT_ALIASES = {"train": "train", "dev": "dev", "validation": "dev", "val": "dev", "eval": "dev"}


def canonical_split(split: str) -> str:
    try:
        return SPLIT_ALIASES[split.lower()]
    except KeyError:
        raise DataError(f"unknown split {split!r} (use train or dev)") from None


@dataclass(frozen=True)
class Task:
    """A task: text columns, labels (``label`` column; float for regression) and metrics."""

    name: str
    num_labels: int
    is_regression: bool
    main_metric: str
    text_fields: tuple[str, ...]
    metric_names: tuple[str, ...]
    label_names: tuple[str, ...] | None = None
    source: str = ""
    loader: Callable[[str], datasets.Dataset] | None = field(default=None, compare=False, repr=False)

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2

    def load_split(self, split: str) -> datasets.Dataset:
        """Load ``train`` or ``dev`` (alias ``validation``) with the text fields and ``label``."""
        split = canonical_split(split)
        if self.loader is None:
            raise DataError(f"task {self.name!r} has no data loader")
        ds = self.loader(split)
        missing = [c for c in (*self.text_fields, "label") if c not in ds.column_names]
        if missing:
            raise DataError(f"task {self.name!r} split {split!r} lacks column(s) {', '.join(missing)}")
        if len(ds) == 0:
            raise DataError(f"task {self.name!r} split {split!r} is empty")
        return ds

    def compute_metrics(self, predictions: Any, labels: Any) -> dict[str, float]:
        return compute_metrics(self.metric_names, predictions, labels, self.is_regression)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_labels": self.num_labels,
            "is_regression": self.is_regression,
            "main_metric": self.main_metric,
            "text_fields": list(self.text_fields),
            "metrics": list(self.metric_names),
            "label_names": list(self.label_names) if self.label_names else None,
            "source": self.source,
        }
