"""search stage: KD-NAS under one or several latency budgets.

Public API (light: torch, transformers and Ray are imported only when a search runs)::

    from kdnas_deploy.search import run_search, search_config, SearchConfig, SearchSettings, PRESETS
"""

from __future__ import annotations

from kdnas_deploy.search.api import run_search, search_config
from kdnas_deploy.search.budget import Budget, BudgetSet, BudgetSpec, LatencyPredictor
from kdnas_deploy.search.config import (
    PRESETS,
    ControllerConfig,
    EvolutionConfig,
    ExecutorConfig,
    OptunaConfig,
    RewardConfig,
    SearchConfig,
    SearchSettings,
)
from kdnas_deploy.search.evaluator import DistillEvaluator
from kdnas_deploy.search.executor import (
    BaseExecutor,
    EvalRequest,
    EvalResult,
    Evaluator,
    Executor,
    LocalExecutor,
    candidate_seed,
)
from kdnas_deploy.search.executors import EXECUTORS, make_executor, register_executor
from kdnas_deploy.search.pareto import pareto_mask
from kdnas_deploy.search.proposals import STRATEGIES, Strategy, get_strategy, register_strategy
from kdnas_deploy.search.reward import mnas_reward
from kdnas_deploy.search.run import SearchRun

__all__ = [
    "EXECUTORS",
    "PRESETS",
    "STRATEGIES",
    "BaseExecutor",
    "Budget",
    "BudgetSet",
    "BudgetSpec",
    "ControllerConfig",
    "DistillEvaluator",
    "EvalRequest",
    "EvalResult",
    "Evaluator",
    "EvolutionConfig",
    "ExecutorConfig",
    "Executor",
    "LatencyPredictor",
    "LocalExecutor",
    "OptunaConfig",
    "RewardConfig",
    "SearchConfig",
    "SearchRun",
    "SearchSettings",
    "Strategy",
    "candidate_seed",
    "get_strategy",
    "make_executor",
    "mnas_reward",
    "pareto_mask",
    "register_executor",
    "register_strategy",
    "run_search",
    "search_config",
]
