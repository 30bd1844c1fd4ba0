"""What a search does when its proxy phase is degenerate (:mod:`kdnas_deploy.search.degenerate`).

``on_degenerate: escalate`` (the default) re-evaluates every candidate of the search once at
:data:`ESCALATION_SCALE` times the proxy budget (twice the optimizer steps: a larger proxy set, or more epochs
where the train split has no rows left), each as a line of ``escalated.jsonl`` (resumable like
``candidates.jsonl``), and ranks those; when they are degenerate too the search stops with a one-line
:class:`~kdnas_deploy.errors.SearchError` (exit 2) instead of crowning a random draw. ``stop`` stops at once;
``warn`` only warns (the behaviour of earlier releases).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kdnas_deploy.errors import SearchError
from kdnas_deploy.search.degenerate import detect_degenerate, warn_degenerate

log = logging.getLogger(__name__)

ESCALATION_SCALE = 2.0


def stop_line(degenerate: dict[str, Any], escalated: bool, plan: dict[str, Any] | None) -> str:
    """The one-line explanation of a stopped search."""
    budget = ""
    if plan:
        budget = (f" (proxy {plan['proxy']} rows x {plan['epochs']:g} epochs = {plan['steps']} steps per candidate,"
                  f" held-out {plan['heldout']} rows)")  # fmt: skip
    after = f" even at {ESCALATION_SCALE:g}x the proxy budget{budget}" if escalated else budget
    return (f"degenerate search{after}: {degenerate['reason']}; its winner would be a random draw, so the search "
            "stops (raise search.proxy_min_rows / proxy_min_steps / heldout_size, check the teacher, or set "
            "search.on_degenerate: warn to continue anyway)")


def handle_degenerate(run: Any, reevaluate: Callable[[float], list[dict[str, Any]]],
                      plan: Callable[[float], dict[str, Any] | None]) -> dict[str, Any]:  # fmt: skip
    """The verdict on ``run.records`` (a SearchRun's) and, for ``escalate``, the re-evaluation: returns
    ``{degenerate, escalation}`` and replaces ``run.records`` by the re-evaluated records; raises SearchError
    when the search must stop. ``reevaluate(scale)`` returns the records at ``scale``; ``plan(scale)`` the proxy
    plan (None when the evaluator has none)."""
    mode = run.cfg.on_degenerate
    first = detect_degenerate(run.records)
    if first is None:
        return {"degenerate": None, "escalation": None}
    if mode == "warn":
        warn_degenerate(first)
        return {"degenerate": first, "escalation": None}
    if mode == "stop":
        raise SearchError(stop_line(first, False, plan(1.0)))
    run.echo(f"degenerate search: {first['reason']}; re-evaluating the {len(run.records)} candidates at "
             f"{ESCALATION_SCALE:g}x the proxy budget")  # fmt: skip
    log.warning("WARNING: degenerate search: %s; raising the proxy budget %gx", first["reason"], ESCALATION_SCALE)
    records = reevaluate(ESCALATION_SCALE)
    again = detect_degenerate(records)
    escalation = {"scale": ESCALATION_SCALE, "first": first, "reevaluated": len(records),
                  "plan": plan(ESCALATION_SCALE), "degenerate": again}  # fmt: skip
    if again is not None:
        raise SearchError(stop_line(again, True, plan(ESCALATION_SCALE)))
    run.echo(f"the raised proxy budget separates the candidates (spread {_spread(records):.4f}): ranking those")
    run.records = records
    return {"degenerate": None, "escalation": escalation}


def _spread(records: list[dict[str, Any]]) -> float:
    scores = [float(r["proxy_score"]) for r in records]
    return max(scores) - min(scores) if scores else 0.0
