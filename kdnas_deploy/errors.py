"""Typed errors. Every error a user can cause derives from :class:`KdnasError`.

The CLI turns a ``KdnasError`` into a one-line message on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations


class KdnasError(Exception):
    """Base class for errors caused by bad input or an unusable environment (exit code 2)."""

    exit_code = 2


class SpaceError(KdnasError):
    """A malformed search-space file or an architecture outside a space."""


class ArchitectureError(KdnasError):
    """An architecture that cannot be parsed or is invalid."""


class TableError(KdnasError):
    """A missing, corrupt, future-schema or mismatching latency table."""


class DeviceError(KdnasError):
    """A device that is not available here (e.g. ``--device cuda`` without a GPU)."""


class DataError(KdnasError):
    """Unknown task, missing columns, empty split, label mismatch."""


class ModelError(KdnasError):
    """A folder that is not a usable model (not a sequence classifier, corrupt checkpoint)."""


class ExportError(KdnasError):
    """An export that failed or did not validate."""


class MetricDropError(ExportError):
    """An export whose dev metric fell more than ``max_metric_drop`` allows."""


class ParityError(ExportError):
    """ONNX outputs differ from PyTorch outputs beyond tolerance."""


class ConfigError(KdnasError):
    """A configuration file with an unknown key or a wrong type."""


class SearchError(KdnasError):
    """An impossible budget, a mismatching run folder given to ``--resume``."""


class DiskError(KdnasError):
    """A write that failed: no space left, a read-only or unwritable path, a path whose parent is a file.

    ``exit_code`` is 2 where the user's path or disk is the cause (ENOSPC, EROFS, EACCES, ...), 1 otherwise
    (an I/O fault that is not the user's input)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class BusyError(KdnasError):
    """A run or work folder that another process is using (its lock is held)."""


class OutputExistsError(KdnasError):
    """An output path that already holds something else (a file, another build's table) and no ``--force``."""


class WeakTeacherError(KdnasError):
    """A teacher within the weak-teacher margin of its task's trivial baseline: a search would distill noise
    (``run`` refuses it before the search unless ``teacher.allow_weak: true``)."""
