"""Pareto front of evaluated candidates: lower predicted latency on every budget, higher proxy metric."""

from __future__ import annotations

import numpy as np


def pareto_mask(latency_ms: np.ndarray, metric: np.ndarray) -> np.ndarray:
    """``True`` for points no other point dominates.

    ``latency_ms`` is ``[n, budgets]`` (lower is better), ``metric`` is ``[n]`` (higher is better). A point
    dominates another when it is no worse on every objective and better on at least one.
    """
    lat = np.asarray(latency_ms, dtype=np.float64).reshape(len(metric), -1)
    met = np.asarray(metric, dtype=np.float64)
    n = len(met)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        no_worse = np.all(lat <= lat[i], axis=1) & (met >= met[i])
        better = np.any(lat < lat[i], axis=1) | (met > met[i])
        if np.any(no_worse & better):
            keep[i] = False
    return keep
