"""``headroom: auto``: the share of a latency budget the search keeps free, from the table's own validated error.

A fixed 15% headroom was set when the shipped tables mispriced small students by up to ~10% on a new machine
state. With a table built on the CPU that runs it, the error is smaller: measured on the AMD EPYC family 26 with
its own fp32 table (2026-12-07, ``bench`` with 100-ms pauses), three KD-NAS students and the hand-crafted one ran at
0.99-1.02x their predictions and the teacher at 1.04x, and 15% left 3.8-4.2x speedups against a 1/3 budget. So
``auto`` takes the 95th percentile of ``measured / predicted - 1`` over the held-out models of the table's
validation report (``<table stem>.validation.json``, ``kdnas-deploy latency validate``; raw predictions, as the
search sees them), kept within [:data:`AUTO_FLOOR`, :data:`AUTO_CEILING`]. The floor covers what held-out models
do not see (the teacher's own error enters every budget); the ceiling is the former fixed value. A table without a
readable report, or with fewer than :data:`MIN_POINTS` points, gets the ceiling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

AUTO_FLOOR = 0.03
AUTO_CEILING = 0.15
AUTO_QUANTILE = 95.0
MIN_POINTS = 20


def validation_report(table_path: str | Path) -> dict[str, Any] | None:
    """The validation report saved beside a table (``<stem>.validation.json``), None when absent or unreadable."""
    p = Path(table_path)
    report = p.with_name(p.stem + ".validation.json")
    if not report.is_file():
        return None
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _under_prediction(points: list[Any]) -> list[float]:
    """``measured / predicted - 1`` of each point with positive finite readings (raw predictions first)."""
    out = []
    for p in points:
        if not isinstance(p, dict):
            continue
        pred, meas = p.get("raw_predicted_ms", p.get("predicted_ms")), p.get("measured_ms")
        if isinstance(pred, int | float) and isinstance(meas, int | float) and pred > 0 and meas > 0:
            ratio = float(meas) / float(pred) - 1.0
            if np.isfinite(ratio):
                out.append(ratio)
    return out


def auto_headroom(table_path: str | Path) -> tuple[float, str]:
    """The headroom ``auto`` gives a table and the sentence that says where it came from."""
    report = validation_report(table_path)
    name = Path(table_path).name
    errors = _under_prediction((report or {}).get("points") or [])
    if len(errors) < MIN_POINTS:
        why = "no validation report" if report is None else f"{len(errors)} validated models (< {MIN_POINTS})"
        return AUTO_CEILING, f"{AUTO_CEILING:.0%} ({why} beside {name}: the ceiling)"
    q = float(np.percentile(errors, AUTO_QUANTILE))
    share = round(min(max(q, AUTO_FLOOR), AUTO_CEILING), 4)
    return share, (f"{share:.1%} (p{AUTO_QUANTILE:.0f} of measured/predicted - 1 over {len(errors)} held-out "
                   f"models of {name}'s validation: {q:+.1%}; kept within {AUTO_FLOOR:.0%}-{AUTO_CEILING:.0%})")
