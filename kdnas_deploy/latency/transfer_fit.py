"""Fitting a correction of a reference latency table from a few whole models measured on another machine.

Each measured model is described by what the reference predicts for it: its whole latency ``ref`` (ms), the
fixed cost ``fixed`` of its layer variant (embeddings, head, session overhead: the reference's first depth
segment extrapolated to zero layers) and its hidden size. The candidate corrections, simplest first:

* ``scale``         ``y = a * ref``                              (1 parameter)
* ``scale_offset``  ``y = a * ref + c``                          (2: a fixed cost in ms)
* ``fixed_layer``   ``y = a * fixed + b * (ref - fixed)``        (2: fixed and per-layer cost scale apart)
* ``scale_by_cost`` ``y = ref * (a + b * ln(unit))``, ``unit`` the variant's per-layer cost in the reference (2:
  the ratio drifts with the size of the work, e.g. small matrices gain less from a second thread)
* ``per_hidden``    ``y = a_h * ref``, one scale per hidden size (one per hidden size measured; a hidden size
  not measured gets the global scale)
* ``fixed_layer_hidden`` ``y = a * fixed + b_h * (ref - fixed)``: one fixed-cost scale and a per-layer scale per
  hidden size (1 + one per hidden size measured; a hidden size not measured gets ``fixed_layer``'s ``b``)

Every fit minimises the squared *relative* error (what MAPE judges). The correction is chosen by leave-one-out
MAPE on the measured points among the candidates with at most ``max(1, K // 2)`` parameters, with the
one-standard-error rule: the simplest candidate whose LOO MAPE is within one standard error of the best's (the
standard error of the best's mean absolute LOO error; at least :data:`TIE_PCT` points). Why: with K=10 the best
LOO figure is itself noisy and favours the larger models. On the OpenVINO pair Xeon -> EPYC of
``tools/results/latency_transfer.json`` the best LOO (``per_hidden``, 4 parameters, 2.77%) scored MAPE 4.42% and
88% within 10% on 100 held-out models, where ``scale_by_cost`` (2 parameters, LOO 3.14%, inside one standard
error) scores 2.73% and 99%; on the four older pairs the rule picks the same candidate as before or one whose
held-out MAPE differs by less than 0.2 points. All candidates are linear in
the reference's entries with weights that sum to one across depth and sequence interpolation, so correcting
the entries corrects every prediction the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

TIE_PCT = 0.1  # LOO MAPE (percentage points) within which the simpler correction is preferred
ORDER = ("scale", "scale_offset", "fixed_layer", "scale_by_cost", "per_hidden", "fixed_layer_hidden")


@dataclass(frozen=True)
class Features:
    """What the reference says about each point: whole latency, its variant's fixed cost, its hidden size and
    its variant's per-layer cost (``unit``, ms; defaults to ``ref``)."""

    ref: np.ndarray
    fixed: np.ndarray
    hidden: np.ndarray
    unit: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> Features:
        unit = None if self.unit is None else self.unit[idx]
        return Features(self.ref[idx], self.fixed[idx], self.hidden[idx], unit)

    @property
    def log_unit(self) -> np.ndarray:
        return np.log(np.maximum(self.ref if self.unit is None else self.unit, 1e-6))

    def __len__(self) -> int:
        return int(self.ref.size)


def _relative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares of ``x @ theta ~ y`` in relative error: rows divided by ``y``."""
    theta, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    return theta


def _scale_of(ref: np.ndarray, y: np.ndarray) -> float:
    r = ref / y
    return float(np.sum(r) / np.sum(r * r))


def _fit_scale(f: Features, y: np.ndarray) -> dict[str, Any]:
    return {"scale": _scale_of(f.ref, y)}


def _fit_scale_offset(f: Features, y: np.ndarray) -> dict[str, Any]:
    a, c = _relative_lstsq(np.stack([f.ref, np.ones_like(f.ref)], axis=1), y)
    return {"scale": float(a), "offset_ms": float(c)}


def _fit_fixed_layer(f: Features, y: np.ndarray) -> dict[str, Any]:
    a, b = _relative_lstsq(np.stack([f.fixed, f.ref - f.fixed], axis=1), y)
    return {"fixed_scale": float(a), "layer_scale": float(b)}


def _fit_scale_by_cost(f: Features, y: np.ndarray) -> dict[str, Any]:
    a, b = _relative_lstsq(np.stack([f.ref, f.ref * f.log_unit], axis=1), y)
    return {"scale": float(a), "log_cost_slope": float(b)}


def _fit_per_hidden(f: Features, y: np.ndarray) -> dict[str, Any]:
    by = {str(int(h)): _scale_of(f.ref[f.hidden == h], y[f.hidden == h]) for h in np.unique(f.hidden)}
    return {"scale": _scale_of(f.ref, y), "scale_by_hidden": by}


def _fit_fixed_layer_hidden(f: Features, y: np.ndarray) -> dict[str, Any]:
    groups = [int(h) for h in np.unique(f.hidden)]
    layer = f.ref - f.fixed
    cols = [f.fixed] + [np.where(f.hidden == h, layer, 0.0) for h in groups]
    theta = _relative_lstsq(np.stack(cols, axis=1), y)
    return {**_fit_fixed_layer(f, y), "fixed_scale": float(theta[0]),
            "layer_scale_by_hidden": {str(h): float(t) for h, t in zip(groups, theta[1:], strict=True)}}  # fmt: skip


def apply_correction(name: str, params: dict[str, Any], f: Features) -> np.ndarray:
    """The corrected latency (ms) of points (or table entries) with features ``f``."""
    if name == "scale":
        return params["scale"] * f.ref
    if name == "scale_offset":
        return params["scale"] * f.ref + params["offset_ms"]
    if name == "fixed_layer":
        return params["fixed_scale"] * f.fixed + params["layer_scale"] * (f.ref - f.fixed)
    if name == "scale_by_cost":
        return f.ref * (params["scale"] + params["log_cost_slope"] * f.log_unit)
    if name == "per_hidden":
        by = params["scale_by_hidden"]
        scales = np.array([by.get(str(int(h)), params["scale"]) for h in f.hidden], dtype=float)
        return scales * f.ref
    if name == "fixed_layer_hidden":
        by = params["layer_scale_by_hidden"]
        scales = np.array([by.get(str(int(h)), params["layer_scale"]) for h in f.hidden], dtype=float)
        return params["fixed_scale"] * f.fixed + scales * (f.ref - f.fixed)
    raise ValueError(f"unknown correction {name!r}")


@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    fit: Callable[[Features, np.ndarray], dict[str, Any]]
    n_params: Callable[[Features], int]


CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in (
        Candidate("scale", "one global scale", _fit_scale, lambda f: 1),
        Candidate("scale_offset", "global scale + fixed offset (ms)", _fit_scale_offset, lambda f: 2),
        Candidate("fixed_layer", "separate scales of fixed and per-layer cost", _fit_fixed_layer, lambda f: 2),
        Candidate("scale_by_cost", "scale drifting with ln(per-layer cost)", _fit_scale_by_cost, lambda f: 2),
        Candidate("per_hidden", "one scale per hidden size", _fit_per_hidden,
                  lambda f: int(np.unique(f.hidden).size)),  # fmt: skip
        Candidate("fixed_layer_hidden", "one fixed-cost scale, one per-layer scale per hidden size",
                  _fit_fixed_layer_hidden, lambda f: 1 + int(np.unique(f.hidden).size)),  # fmt: skip
    )
}


def loo_errors(name: str, f: Features, y: np.ndarray) -> np.ndarray:
    """Leave-one-out errors (percent) of one candidate: fit on K-1 points, predict the one left out."""
    cand = CANDIDATES[name]
    n = len(f)
    errs = np.full(n, np.inf)
    for i in range(n):
        keep = np.arange(n) != i
        train = f.take(keep)
        if cand.n_params(train) > n - 1:
            continue
        params = cand.fit(train, y[keep])
        pred = apply_correction(name, params, f.take(np.array([i])))[0]
        errs[i] = 100.0 * (pred - y[i]) / y[i]
    return errs


def _standard_error(errors: list[float] | None) -> float:
    """The standard error (percentage points) of a mean absolute LOO error; 0 without two finite errors."""
    e = np.abs(np.asarray([x for x in errors or [] if np.isfinite(x)], dtype=float))
    return float(e.std(ddof=1) / np.sqrt(e.size)) if e.size >= 2 else 0.0


def select_correction(
    f: Features, y: np.ndarray, valid: Callable[[str, dict[str, Any]], bool] | None = None,
    candidates: tuple[str, ...] = ORDER,
) -> dict[str, Any]:  # fmt: skip
    """Fit every candidate, score it by LOO MAPE and pick one (see module doc).

    ``valid(name, params)`` may refuse a fit (e.g. one that makes some table entry non-positive). Returns
    ``{"model", "params", "n_params", "max_params", "loo": {name: {...}}, "fitted_ms", "loo_error_pct"}``.
    """
    y = np.asarray(y, dtype=float)
    k = len(f)
    max_params = max(1, k // 2)
    scores: dict[str, dict[str, Any]] = {}
    fits: dict[str, dict[str, Any]] = {}
    for name in candidates:
        cand = CANDIDATES[name]
        p = cand.n_params(f)
        row: dict[str, Any] = {"n_params": p, "description": cand.description, "allowed": p <= max_params}
        if row["allowed"]:
            errs = loo_errors(name, f, y)
            params = cand.fit(f, y)
            row["loo_mape_pct"] = round(float(np.mean(np.abs(errs))), 4) if np.isfinite(errs).all() else None
            row["loo_error_pct"] = [round(float(e), 4) for e in errs]
            row["params"] = params
            if valid is not None and not valid(name, params):
                row["allowed"], row["refused"] = False, "makes a table entry non-positive"
            fits[name] = params
        scores[name] = row
    usable = [n for n in candidates if scores[n]["allowed"] and scores[n].get("loo_mape_pct") is not None]
    if not usable:  # K=1 cannot happen (K >= 2 is checked upstream); fall back to the plain scale
        usable = ["scale"]
        fits.setdefault("scale", _fit_scale(f, y))
    best_name = min(usable, key=lambda n: scores[n].get("loo_mape_pct") or 0.0)
    best = scores[best_name].get("loo_mape_pct") or 0.0
    margin = max(TIE_PCT, _standard_error(scores[best_name].get("loo_error_pct")))
    chosen = next(n for n in usable if (scores[n].get("loo_mape_pct") or 0.0) <= best + margin)
    fitted = apply_correction(chosen, fits[chosen], f)
    return {
        "model": chosen,
        "params": fits[chosen],
        "n_params": scores[chosen]["n_params"],
        "max_params": max_params,
        "tie_pct": TIE_PCT,
        "one_se_pct": round(margin, 4),
        "loo": scores,
        "fitted_ms": fitted,
        "loo_error_pct": scores[chosen].get("loo_error_pct"),
    }
