"""Held-out sequence lengths in ``latency validate --seq-held-out 48,96``: the interpolation between grid lengths.

A table measures whole models at a few grid lengths (``--seq 32,64,128``) and predicts linearly in between
(:func:`kdnas_deploy.latency.scheme.interp_seq`). Validation measures the drawn models once more at lengths
*not* in the grid, in the same measurement window as the grid-length points, and reports the error of the
interpolated predictions (within-10% share, MAPE) in the same report, under ``seq_held_out``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import TableError
from kdnas_deploy.latency.anchor import anchor_factors
from kdnas_deploy.latency.measure import Job, Measured


def check_held_out(seq_lens: Sequence[int], held_out: Sequence[int]) -> tuple[int, ...]:
    """The held-out lengths, sorted; TableError (one line naming the grid) for one on or outside the grid."""
    grid = sorted(int(s) for s in seq_lens)
    out = tuple(sorted({int(s) for s in held_out}))
    if out and len(grid) < 2:
        raise TableError(f"--seq-held-out needs a table with at least 2 sequence lengths; its grid is {grid}")
    for s in out:
        if s in grid:
            raise TableError(f"--seq-held-out {s} is a grid length of the table {grid}: pick lengths between them")
        if not grid[0] < s < grid[-1]:
            raise TableError(f"--seq-held-out {s} is outside the table's sequence lengths {grid} (no extrapolation)")
    return out


def held_out_jobs(jobs: Sequence[Job], held_out: Sequence[int]) -> list[Job]:
    """The validation jobs again at each held-out length (same exported models, keys ``...@sN``)."""
    return [Job(f"{j.key}@s{s}", j.artifact, j.batch, s) for s in held_out for j in jobs]


def held_out_report(table: Any, archs: Sequence[Architecture], jobs: Sequence[Job], held_out: Sequence[int],
                    results: dict[str, Measured], anchor: dict[str, Any],
                    metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]]) -> dict[str, Any]:  # fmt: skip
    """Interpolation error at the held-out lengths (``metrics``: validate's scores), overall and per length."""
    batch = jobs[0].batch if jobs else table.batch_sizes[0]
    per_length: dict[str, Any] = {}
    points: list[dict[str, Any]] = []
    all_pred, all_meas = [], []
    for s in held_out:
        raw = np.asarray(table.predict(list(archs), batch, s, calibrated=False), dtype=float)
        pred = raw * anchor_factors(raw, table.probe, anchor)
        meas = np.array([results[f"{j.key}@s{s}"].latency_ms for j in jobs], dtype=float)
        per_length[str(s)] = {k: v for k, v in metrics(pred, meas).items() if not k.endswith("wilson_low")}
        all_pred.append(pred)
        all_meas.append(meas)
        for a, p, r, m in zip(archs, pred, raw, meas, strict=True):
            points.append({"arch": a.short(), "seq": s, "predicted_ms": round(float(p), 5),
                           "raw_predicted_ms": round(float(r), 5), "measured_ms": round(float(m), 5),
                           "error_pct": round(float(100 * (p - m) / m), 3)})  # fmt: skip
    pred_all, meas_all = np.concatenate(all_pred), np.concatenate(all_meas)
    out: dict[str, Any] = {"lengths": list(held_out), "grid": list(table.seq_lens), "n_points": len(points)}
    out.update(metrics(pred_all, meas_all))
    out["per_length"] = per_length
    out["points"] = points
    return out


def held_out_line(report: dict[str, Any]) -> str:
    """One summary line of the ``seq_held_out`` section (what the CLI prints)."""
    lengths = ",".join(str(s) for s in report["lengths"])
    return (f"held-out lengths {lengths} (grid {report['grid']}): interpolation MAPE {report['mape_pct']:.2f}%, "
            f"within 10% {100 * report['within_10pct']:.0f}% of {report['n_points']} points")  # fmt: skip
