"""The built-in search strategies: ``kdnas`` (LSTM reward controller), ``random``, regularized ``evolution``
and ``optuna-tpe`` (:mod:`.optuna_tpe`); each is one registered :class:`~.proposals.Strategy` class.

See :mod:`kdnas_deploy.search.proposals` for the contract (the pool, determinism, the evaluation budget).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import ConfigError
from kdnas_deploy.search.controller import ControllerConfig
from kdnas_deploy.search.optuna_tpe import OptunaConfig, OptunaTPEStrategy
from kdnas_deploy.search.proposals import (
    STRATEGIES,
    Evaluated,
    Proposal,
    ProposalContext,
    Strategy,
    best_so_far,
    get_strategy,
    random_pick,
    register_strategy,
    unused_sections,
)
from kdnas_deploy.space import DIMENSIONS, SearchSpace

if TYPE_CHECKING:  # pragma: no cover
    from kdnas_deploy.search.budget import BudgetSet

_random_pick = random_pick  # the old private name


@dataclass(frozen=True)
class EvolutionConfig:
    """Regularized evolution (Real et al. 2019): population with aging, tournament selection."""

    population: int = 12
    tournament: int = 4

    def __post_init__(self) -> None:
        if self.tournament < 1 or self.population < self.tournament:
            raise ConfigError("evolution needs 1 <= tournament <= population")


# ---------------------------------------------------------------------- random
def propose_random(ctx: ProposalContext) -> list[Proposal]:
    return [Proposal(a, "random") for a in random_pick(ctx.pool, ctx.k, ctx.rng, set())]


# ---------------------------------------------------------------------- kdnas (controller)
def _log_ratio(budgets: BudgetSet, archs: Sequence[Architecture]) -> np.ndarray:
    return np.log(budgets.latencies(archs) / budgets.budget_ms[None, :])


def propose_kdnas(ctx: ProposalContext) -> list[Proposal]:
    """Sample ``candidates`` members, score by the controller, take the top-k (epsilon of them random)."""
    cfg = ctx.config
    if len(ctx.history) < 2:  # nothing to learn from yet: explore
        return propose_random(ctx)
    from kdnas_deploy.search.controller import RewardController  # torch on first use

    hist = list(ctx.history)
    # context of each measured candidate: the best architecture found before its episode
    best_before = []
    for h in hist:
        prior = [g for g in hist if g.episode < h.episode]
        best_before.append(best_so_far(prior, ctx.budgets) or h.arch)
    controller = RewardController(
        ctx.space, len(ctx.budgets.budgets), cfg.controller, seed=cfg.seed * 1009 + ctx.episode
    )
    archs = [h.arch for h in hist]
    controller.fit(archs, best_before, _log_ratio(ctx.budgets, archs), [h.reward for h in hist])

    eps = cfg.epsilon(ctx.episode)
    n_random = int(np.sum(ctx.rng.random(ctx.k) < eps))
    n_model = ctx.k - n_random
    sampled = random_pick(ctx.pool, min(cfg.candidates, len(ctx.pool)), ctx.rng, set())
    best = best_so_far(hist, ctx.budgets) or sampled[0]
    scores = controller.predict(sampled, [best] * len(sampled), _log_ratio(ctx.budgets, sampled)) if sampled else []
    # exploit among members that meet every budget (the search's winner must); explore anywhere in the pool
    feasible = np.array([ctx.budgets.feasible(a) for a in sampled], dtype=bool)
    rank = np.where(feasible, np.asarray(scores), -np.inf) if feasible.any() else np.asarray(scores)
    order = [i for i in np.argsort(-rank, kind="stable") if np.isfinite(rank[i])]
    chosen = [Proposal(sampled[int(i)], "controller", float(scores[int(i)])) for i in order[:n_model]]
    taken = {p.arch for p in chosen}
    chosen += [Proposal(a, "epsilon") for a in random_pick(ctx.pool, ctx.k - len(chosen), ctx.rng, taken)]
    return chosen


# ---------------------------------------------------------------------- regularized evolution
def mutate(arch: Architecture, space: SearchSpace, rng: np.random.Generator) -> Architecture:
    """Change one dimension to another allowed value (heads re-drawn if the new hidden size needs it)."""
    lists = space.choice_lists()
    values = dict(zip(DIMENSIONS, arch.as_tuple(), strict=True))
    dim = DIMENSIONS[int(rng.integers(len(DIMENSIONS)))]
    if dim == "num_heads":
        options = [a for a in space.heads_for(values["hidden_size"]) if a != values["num_heads"]]
    else:
        options = [v for v in lists[dim] if v != values[dim]]
    if not options:
        return arch
    values[dim] = options[int(rng.integers(len(options)))]
    allowed = space.heads_for(values["hidden_size"])
    if values["num_heads"] not in allowed:
        values["num_heads"] = allowed[int(rng.integers(len(allowed)))]
    return Architecture(**values)


def propose_evolution(ctx: ProposalContext) -> list[Proposal]:
    """Tournament on the ``population`` most recent evaluations (aging), mutate the winner."""
    ev = ctx.config.evolution
    if len(ctx.history) < ev.population:
        return propose_random(ctx)
    population = list(ctx.history)[-ev.population :]
    pool = set(ctx.pool)
    out: list[Proposal] = []
    taken: set[Architecture] = set()
    for _ in range(ctx.k):
        child = None
        for _attempt in range(50):
            idx = ctx.rng.choice(len(population), size=ev.tournament, replace=False)
            parent = max((population[int(i)] for i in idx), key=lambda h: h.reward)
            cand = mutate(parent.arch, ctx.space, ctx.rng)
            if cand in pool and cand not in taken:
                child = cand
                break
        if child is None:
            extra = random_pick(ctx.pool, 1, ctx.rng, taken)
            if not extra:
                break
            out.append(Proposal(extra[0], "random"))
            taken.add(extra[0])
        else:
            out.append(Proposal(child, "mutation"))
            taken.add(child)
    return out


class RandomStrategy(Strategy):
    """Uniform sampling of the pool."""

    name = "random"

    @classmethod
    def propose(cls, ctx: ProposalContext) -> list[Proposal]:
        return propose_random(ctx)


class KdnasStrategy(Strategy):
    """The KD-NAS LSTM reward controller (:mod:`.controller`), epsilon-greedy."""

    name = "kdnas"
    sections = ("controller",)

    @classmethod
    def propose(cls, ctx: ProposalContext) -> list[Proposal]:
        return propose_kdnas(ctx)

    @classmethod
    def warm_up(cls) -> None:
        from kdnas_deploy.search.controller import warm_up_training

        warm_up_training()


class EvolutionStrategy(Strategy):
    """Regularized evolution: tournament on the most recent evaluations, mutate the winner."""

    name = "evolution"
    sections = ("evolution",)

    @classmethod
    def propose(cls, ctx: ProposalContext) -> list[Proposal]:
        return propose_evolution(ctx)


for _cls in (KdnasStrategy, RandomStrategy, EvolutionStrategy, OptunaTPEStrategy):
    register_strategy(_cls)

__all__ = [
    "STRATEGIES",
    "ControllerConfig",
    "Evaluated",
    "EvolutionConfig",
    "EvolutionStrategy",
    "KdnasStrategy",
    "OptunaConfig",
    "OptunaTPEStrategy",
    "Proposal",
    "ProposalContext",
    "RandomStrategy",
    "Strategy",
    "best_so_far",
    "get_strategy",
    "mutate",
    "register_strategy",
    "unused_sections",
]
