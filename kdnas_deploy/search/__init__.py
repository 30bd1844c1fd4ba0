"""search stage: KD-NAS under one or several latency budgets.

Public API (imported lazily so ``import kdnas_deploy.search`` stays light)::

    from kdnas_deploy.search import run_search, SearchConfig, SearchRun, Budget, BudgetSet
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_search": "kdnas_deploy.search.api",
    "SearchConfig": "kdnas_deploy.search.config",
    "RewardConfig": "kdnas_deploy.search.config",
    "ControllerConfig": "kdnas_deploy.search.config",
    "EvolutionConfig": "kdnas_deploy.search.config",
    "BudgetSpec": "kdnas_deploy.search.config",
    "PRESETS": "kdnas_deploy.search.config",
    "Budget": "kdnas_deploy.search.budget",
    "BudgetSet": "kdnas_deploy.search.budget",
    "LatencyPredictor": "kdnas_deploy.search.budget",
    "SearchRun": "kdnas_deploy.search.run",
    "STRATEGIES": "kdnas_deploy.search.strategies",
    "EvalRequest": "kdnas_deploy.search.executor",
    "EvalResult": "kdnas_deploy.search.executor",
    "Evaluator": "kdnas_deploy.search.executor",
    "Executor": "kdnas_deploy.search.executor",
    "LocalExecutor": "kdnas_deploy.search.executor",
    "EXECUTORS": "kdnas_deploy.search.executor",
    "register_executor": "kdnas_deploy.search.executor",
    "candidate_seed": "kdnas_deploy.search.executor",
    "DistillEvaluator": "kdnas_deploy.search.evaluator",
    "mnas_reward": "kdnas_deploy.search.reward",
    "pareto_mask": "kdnas_deploy.search.pareto",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kdnas_deploy.search' has no attribute {name!r}")
