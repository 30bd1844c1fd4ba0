"""Tasks: GLUE by name (local GLUE layout or hub), CSV/TSV/JSON files, and the offline built-in task.

``get_task(name, data_dir=None, **kwargs)`` resolves a name through :data:`TASK_REGISTRY`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import DataError
from kdnas_deploy.tasks.base import Task, canonical_split
from kdnas_deploy.tasks.builtin import builtin_task
from kdnas_deploy.tasks.files import FILE_EXTENSIONS, file_task
from kdnas_deploy.tasks.glue import GLUE_TASKS, glue_task
from kdnas_deploy.tasks.metrics import METRICS, compute_metrics

TaskFactory = Callable[..., Task]


def _glue_factory(name: str) -> TaskFactory:
    def make(data_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Task:
        if kwargs:
            raise DataError(f"GLUE task {name!r} takes no option(s) {', '.join(kwargs)}")
        return glue_task(name, data_dir)

    return make


def _builtin_factory(data_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Task:
    return builtin_task(**kwargs)


TASK_REGISTRY: dict[str, TaskFactory] = {name: _glue_factory(name) for name in GLUE_TASKS}
TASK_REGISTRY["builtin"] = _builtin_factory
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "sts": "stsb", "mnli-m": "mnli"}


def task_names() -> list[str]:
    return sorted(TASK_REGISTRY)


def is_known_task(name: str | Path) -> bool:
    """True for a registered task name (or alias) and for an existing CSV/TSV/JSON file or folder."""
    key = str(name).strip()
    path = Path(key)
    return _ALIASES.get(key.lower(), key.lower()) in TASK_REGISTRY or path.is_dir() or (
        path.is_file() and path.suffix.lower() in FILE_EXTENSIONS)


def get_task(name: str | Path, data_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Task:
    """A task by name (``sst2``, ..., ``builtin``) or a CSV/TSV/JSON file or folder path."""
    key = str(name).strip()
    canon = _ALIASES.get(key.lower(), key.lower())
    if canon in TASK_REGISTRY:
        return TASK_REGISTRY[canon](data_dir=data_dir, **kwargs)
    path = Path(key)
    if path.suffix.lower() in FILE_EXTENSIONS or path.is_dir():
        return file_task(path, **kwargs)
    raise DataError(f"unknown task {key!r} (known: {', '.join(task_names())}, or a .csv/.tsv/.json file)")


__all__ = [
    "METRICS",
    "TASK_REGISTRY",
    "Task",
    "canonical_split",
    "compute_metrics",
    "get_task",
    "is_known_task",
    "task_names",
]
