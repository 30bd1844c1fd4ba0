"""Small statistics of validation reports: the Wilson score interval of a fraction, a measurement time estimate."""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_lower(successes: int | float, n: int, z: float = Z95) -> float:
    """Lower bound of the Wilson score interval of ``successes / n`` (0.0 for ``n == 0``).

    E.g. 95 of 100 held-out models within +-10% supports "at least ~88.8% within +-10%" at 95% confidence;
    30 of 30 supports only ~88.6%.
    """
    if n <= 0:
        return 0.0
    p = min(max(float(successes) / n, 0.0), 1.0)
    denom = 1.0 + z * z / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / denom)


def measurement_seconds(table: Any, n_models: int) -> float:
    """A rough wall time to export and measure ``n_models`` (plus the two probes) as ``table`` was measured:
    its recorded seconds per model, else its build time per entry (3 s per model when neither is recorded)."""
    meas = table.data.get("measurement", {}) or {}
    per = meas.get("seconds_per_model")
    if per is None and meas.get("build_seconds"):
        per = float(meas["build_seconds"]) / max(len(table.data.get("entries", [])), 1)
    return float(per or 3.0) * (n_models + 2)
