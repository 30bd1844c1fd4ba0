"""Latency lookup tables: profile a search space on a device through the deployed path, predict, validate.

Public API (imported lazily so that the CLI's ``--help`` stays instant)::

    from kdnas_deploy.latency import LatencyTable, build_table, get_backend, validate_table

Modules: ``backends`` (package: the contract in ``base``, ``cpu-ort`` in ``cpu``, ``cuda-ort``/``cuda-torch``
in ``cuda``, the registry in its ``__init__``), ``fingerprint``, ``scheme`` (in-context piecewise scheme),
``measure`` (probe, state detection), ``profiler`` (build), ``table`` (file + predictor, ``load_table``),
``validate`` (report, plot, recalibration), ``anchor`` (the one re-anchoring decision), ``stats`` (Wilson
bound), ``transfer`` + ``transfer_fit`` (a table for a new machine from K measured models), ``cli``. The
deployed path itself is :mod:`kdnas_deploy.runtime`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LatencyTable": "kdnas_deploy.latency.table",
    "build_table": "kdnas_deploy.latency.profiler",
    "get_backend": "kdnas_deploy.latency.backends",
    "BACKENDS": "kdnas_deploy.latency.backends",
    "MeasurePolicy": "kdnas_deploy.latency.measure",
    "validate_table": "kdnas_deploy.latency.validate",
    "recalibrate": "kdnas_deploy.latency.validate",
    "transfer_table": "kdnas_deploy.latency.transfer",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kdnas_deploy.latency' has no attribute {name!r}")
