"""Issue 20's targets over the transfer bench's finished pairs (:mod:`tools.bench_transfer`)."""

from __future__ import annotations

from typing import Any

TARGETS = {"within_10pct_min": 0.95, "mape_pct_max": 5.0, "transfer_seconds_max": 60.0, "peak_rss_gb_max": 1.5}


def targets(pairs: dict[str, Any], default_space: bool) -> dict[str, Any]:
    """Worst value over the finished pairs for each target (the reference itself is only a baseline)."""
    done = [p for p in pairs.values() if p.get("done")]
    if not done:
        return {}
    tr = [p["scores"]["transferred"]["anchored"] for p in done]
    out = {
        "within_10pct": {"value": min(s["within_10pct"] for s in tr), "target": f">= {TARGETS['within_10pct_min']}"},
        "mape_pct": {"value": max(s["mape_pct"] for s in tr), "target": f"<= {TARGETS['mape_pct_max']}"},
        "within_5pct_moonshot": {"value": min(s["within_5pct"] for s in tr), "target": ">= 0.9"},
        "transfer_peak_rss_gb": {"value": max(p["transfer"]["peak_rss_gb"] for p in done),
                                 "target": f"< {TARGETS['peak_rss_gb_max']}"},  # fmt: skip
    }
    out["within_10pct"]["met"] = out["within_10pct"]["value"] >= TARGETS["within_10pct_min"]
    out["mape_pct"]["met"] = out["mape_pct"]["value"] <= TARGETS["mape_pct_max"]
    out["within_5pct_moonshot"]["met"] = out["within_5pct_moonshot"]["value"] >= 0.9
    out["transfer_peak_rss_gb"]["met"] = out["transfer_peak_rss_gb"]["value"] < TARGETS["peak_rss_gb_max"]
    if default_space:
        wall = max(p["transfer"]["seconds"] for p in done)
        out["transfer_seconds"] = {"value": wall, "target": f"<= {TARGETS['transfer_seconds_max']}",
                                   "met": wall <= TARGETS["transfer_seconds_max"]}  # fmt: skip
    slack = []
    for p in done:
        floor = max(0.5, p["held_out"]["noise_floor_pct"])
        for key in ("transferred", "full_build"):
            if key in p["scores"]:
                s = p["scores"][key]
                slack.append(s["raw"]["mape_pct"] + floor - s["anchored"]["mape_pct"])
    out["reanchored_mape_within_raw_plus_noise"] = {"value": round(min(slack), 3), "target": ">= 0 (raw MAPE + "
                                                    "max(0.5, noise floor) - re-anchored MAPE)", "met": min(slack) >= 0}
    return out
