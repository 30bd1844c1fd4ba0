"""MnasNet-style reward ``metric * prod_b (latency_b / budget_b) ** w_b``, ``w = alpha`` within else ``beta``.

The metric is either the task metric on the held-out slice of the training set (``task``) or one minus the
normalised distillation loss (``loss``: ``1 - loss / (1 + loss)``, in (0, 1], higher is better).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kdnas_deploy.search.config import RewardConfig


def mnas_reward(metric: float, latency_ms: np.ndarray, budget_ms: np.ndarray, cfg: RewardConfig) -> float:
    """Reward of one candidate; ``latency_ms`` and ``budget_ms`` hold one value per budget."""
    ratio = np.asarray(latency_ms, dtype=np.float64) / np.asarray(budget_ms, dtype=np.float64)
    w = np.where(ratio <= 1.0, cfg.alpha, cfg.beta)
    return float(metric * np.prod(ratio**w))


def _task_metric(score: float, final_loss: float) -> float:
    return float(score)


def _loss_metric(score: float, final_loss: float) -> float:
    loss = max(float(final_loss), 0.0)
    return 1.0 - loss / (1.0 + loss)


# metric kind -> f(score on the held-out slice, final distillation loss)
METRICS: dict[str, Callable[[float, float], float]] = {"task": _task_metric, "loss": _loss_metric}


def proxy_metric(kind: str, score: float, final_loss: float) -> float:
    return METRICS[kind](score, final_loss)
