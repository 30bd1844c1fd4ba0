"""The in-context scheme: whole models of a few depths per layer variant -> fixed cost + piecewise per-layer cost.

A layer timed alone in a tiny graph runs with hot caches and under-predicts whole models, so every table entry
is a *whole* deployed model (embeddings, encoder of ``d`` identical layers, pooler, head) at an anchor depth
``d``. Between anchors the latency is linear in depth (one marginal per-layer cost per segment); the fixed cost
(embeddings, head, session overhead) is the first segment extrapolated to zero layers. On this machine fp32
cost per layer grows with depth, so anchors ``1, 3, 6`` (not just ``1, 3``) are needed: see the validation
reports next to the shipped tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

INNER_ANCHORS = (3, 6, 9, 12, 18, 24)
SCHEME_NAME = "in-context-piecewise"


def anchor_depths(layers: Sequence[int]) -> tuple[int, ...]:
    """Depths measured per variant: the space's smallest and largest depth and the inner anchors between."""
    lo, hi = min(layers), max(layers)
    return tuple(sorted({lo, hi} | {d for d in INNER_ANCHORS if lo < d < hi}))


def piecewise(depths: np.ndarray, anchors: Sequence[int], values: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation in depth, vectorized over rows.

    ``values`` has shape ``(N, len(anchors))`` (latency of each row's variant at each anchor depth);
    ``depths`` has shape ``(N,)``. Depths beyond the outer anchors extrapolate the outer segment.
    """
    a = np.asarray(anchors, dtype=float)
    depths = np.asarray(depths, dtype=float)
    if a.size == 1:
        return values[:, 0].copy()
    k = np.clip(np.searchsorted(a, depths, side="left"), 1, a.size - 1)
    rows = np.arange(values.shape[0])
    d0, d1 = a[k - 1], a[k]
    t0, t1 = values[rows, k - 1], values[rows, k]
    return t0 + (depths - d0) * (t1 - t0) / (d1 - d0)


def decompose(anchors: Sequence[int], values: Sequence[float]) -> dict[str, object]:
    """Fixed cost and per-layer cost of each segment, for display (``show``) and reports."""
    a = list(anchors)
    v = [float(x) for x in values]
    if len(a) == 1:
        return {"fixed_ms": None, "per_layer_ms": []}
    slopes = [(v[i + 1] - v[i]) / (a[i + 1] - a[i]) for i in range(len(a) - 1)]
    fixed = v[0] - a[0] * slopes[0]
    return {
        "fixed_ms": round(fixed, 4),
        "per_layer_ms": [
            {"from_layers": a[i], "to_layers": a[i + 1], "latency_ms_per_layer": round(s, 4)}
            for i, s in enumerate(slopes)
        ],
    }


def interp_seq(pred: np.ndarray, grid: Sequence[int], seq: int) -> np.ndarray:
    """Linear interpolation between the two grid sequence lengths around ``seq``; ``pred`` is ``(N, S)``."""
    g = list(grid)
    if seq in g:
        return pred[:, g.index(seq)]
    j = int(np.searchsorted(np.asarray(g), seq))
    lo, hi = g[j - 1], g[j]
    w = (seq - lo) / (hi - lo)
    return (1.0 - w) * pred[:, j - 1] + w * pred[:, j]
