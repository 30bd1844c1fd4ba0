"""Is the proxy phase telling candidates apart? Standard errors of proxy metrics and the degenerate-search check.

Each candidate's proxy metric (the task's main metric on the held-out slice of ``n`` rows) gets a standard
error: binomial ``sqrt(p (1 - p) / n)`` for accuracy-like metrics (``accuracy``, ``f1``), and the large-sample
error of a correlation ``(1 - r^2) / sqrt(n - 1)`` for ``matthews_correlation`` (the correlation of two binary
variables), ``pearson`` and ``spearmanr``. A search is *degenerate* when its candidates' proxy metrics are

- ``tied``: their spread (max - min) is at most one standard error (the median of the candidates'), or
- ``at_baseline``: every candidate is within two standard errors of the held-out slice's trivial baseline
  (:mod:`kdnas_deploy.tasks.baselines`),

in which case the winner is a random draw: the search logs a loud warning and records ``degenerate``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

ACCURACY_LIKE = frozenset({"accuracy", "f1"})
TIE_SE = 1.0  # spread at most this many standard errors: tied
BASELINE_SE = 2.0  # within this many standard errors of the trivial baseline: noise


def metric_se(metric: str, value: float, n: int) -> float | None:
    """Standard error of ``metric`` = ``value`` measured on ``n`` rows (None when ``n`` < 2 or not finite)."""
    if n < 2 or not math.isfinite(value):
        return None
    if metric in ACCURACY_LIKE:
        p = min(max(value, 0.0), 1.0)
        return math.sqrt(p * (1.0 - p) / n)
    r = min(max(value, -1.0), 1.0)
    return (1.0 - r * r) / math.sqrt(n - 1)


def proxy_uncertainty(score: float, info: dict[str, Any]) -> dict[str, Any]:
    """The record fields of a candidate's proxy score: ``proxy_n``, ``proxy_se``, ``proxy_baseline`` (from the
    evaluator's ``info``: ``heldout_n``, ``main_metric``, ``baseline``; None where it does not say)."""
    n = info.get("heldout_n")
    metric = info.get("main_metric")
    se = metric_se(str(metric), float(score), int(n)) if n is not None and metric else None
    baseline = info.get("baseline")
    return {
        "proxy_n": int(n) if n is not None else None,
        "proxy_se": round(se, 6) if se is not None else None,
        "proxy_baseline": float(baseline) if baseline is not None else None,
        "proxy_text": f"{score:.4f} ± {se:.4f}" if se is not None else f"{score:.4f}",
    }


def _median(values: Sequence[float]) -> float:
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else 0.5 * (v[mid - 1] + v[mid])


def detect_degenerate(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """``{reason, figures}`` when the candidates' proxy scores are tied or within noise of the baseline."""
    if not records:
        return None
    scores = [float(r["proxy_score"]) for r in records]
    ses = [float(r["proxy_se"]) for r in records if r.get("proxy_se") is not None]
    se = _median(ses) if ses else 0.0
    spread = max(scores) - min(scores)
    baselines = [float(r["proxy_baseline"]) for r in records if r.get("proxy_baseline") is not None]
    figures: dict[str, Any] = {
        "candidates": len(scores),
        "min": round(min(scores), 6),
        "max": round(max(scores), 6),
        "spread": round(spread, 6),
        "median_se": round(se, 6) if ses else None,
        "baseline": round(baselines[0], 6) if baselines else None,
        "heldout_n": records[0].get("proxy_n"),
    }
    reasons = []
    if len(scores) >= 2 and spread <= TIE_SE * se + 1e-12:
        reasons.append(f"tied: all {len(scores)} proxy scores within {spread:.4f} (one standard error {se:.4f})")
    if baselines and ses and len(ses) == len(scores):
        base = baselines[0]
        gaps = [abs(s - base) - BASELINE_SE * float(r["proxy_se"]) for s, r in zip(scores, records, strict=True)]
        if all(g <= 1e-12 for g in gaps):
            reasons.append(
                f"at_baseline: every proxy score ({min(scores):.4f}-{max(scores):.4f}) is within 2 standard "
                f"errors (~{2 * se:.4f}) of the trivial baseline {base:.4f}"
            )
    if not reasons:
        return None
    return {"reason": "; ".join(reasons), "kinds": [r.split(":")[0] for r in reasons], "figures": figures}


def warn_degenerate(degenerate: dict[str, Any]) -> str:
    """The loud warning line (logged, and returned for the search's echo)."""
    line = (
        f"WARNING: degenerate search: {degenerate['reason']}; the proxy phase cannot tell the candidates apart, "
        "so the winner is a random draw (raise the proxy budget: proxy_fraction, heldout_size, proxy_epochs)"
    )
    log.warning("%s", line)
    return line
