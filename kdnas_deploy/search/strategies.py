"""Search strategies: ``kdnas`` (LSTM reward controller), ``random`` and regularized ``evolution``.

Every strategy proposes ``k`` not-yet-evaluated architectures per episode from the *pool* (members of the
space not evaluated yet; only feasible ones under ``--hard-budget``). A proposal is a pure function of the
history of earlier episodes and a per-episode seeded generator, so strategies keep no state between episodes
and a resumed search proposes the same candidates. All strategies spend the same evaluation budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.space import DIMENSIONS, SearchSpace

if TYPE_CHECKING:  # pragma: no cover
    from kdnas_deploy.search.budget import BudgetSet
    from kdnas_deploy.search.config import SearchConfig


@dataclass(frozen=True)
class Evaluated:
    """One finished evaluation as strategies see it."""

    arch: Architecture
    reward: float
    episode: int
    index: int


@dataclass(frozen=True)
class Proposal:
    """A candidate to evaluate, how it was chosen, and the controller's predicted reward (if any)."""

    arch: Architecture
    source: str
    predicted_reward: float | None = None


@dataclass(frozen=True)
class ProposalContext:
    config: SearchConfig
    space: SearchSpace
    budgets: BudgetSet
    episode: int
    k: int
    rng: np.random.Generator
    history: tuple[Evaluated, ...]  # earlier episodes only, sorted by (episode, index)
    pool: tuple[Architecture, ...]  # eligible, not yet evaluated, in space order


def _random_pick(
    pool: Sequence[Architecture], n: int, rng: np.random.Generator, exclude: set[Architecture]
) -> list[Architecture]:
    rest = [a for a in pool if a not in exclude]
    n = min(n, len(rest))
    if n <= 0:
        return []
    idx = rng.choice(len(rest), size=n, replace=False)
    return [rest[int(i)] for i in idx]


def best_so_far(history: Sequence[Evaluated], budgets: BudgetSet) -> Architecture | None:
    """Highest-reward feasible architecture in ``history`` (highest reward overall if none is feasible)."""
    if not history:
        return None
    feasible = [h for h in history if budgets.feasible(h.arch)]
    pick = feasible or list(history)
    return max(pick, key=lambda h: (h.reward, -h.episode, -h.index)).arch


# ---------------------------------------------------------------------- random
def propose_random(ctx: ProposalContext) -> list[Proposal]:
    return [Proposal(a, "random") for a in _random_pick(ctx.pool, ctx.k, ctx.rng, set())]


# ---------------------------------------------------------------------- kdnas (controller)
def _log_ratio(budgets: BudgetSet, archs: Sequence[Architecture]) -> np.ndarray:
    return np.log(budgets.latencies(archs) / budgets.budget_ms[None, :])


def propose_kdnas(ctx: ProposalContext) -> list[Proposal]:
    """Sample ``candidates`` members, score by the controller, take the top-k (epsilon of them random)."""
    cfg = ctx.config
    if len(ctx.history) < 2:  # nothing to learn from yet: explore
        return propose_random(ctx)
    from kdnas_deploy.search.controller import RewardController

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
    sampled = _random_pick(ctx.pool, min(cfg.candidates, len(ctx.pool)), ctx.rng, set())
    best = best_so_far(hist, ctx.budgets) or sampled[0]
    scores = controller.predict(sampled, [best] * len(sampled), _log_ratio(ctx.budgets, sampled)) if sampled else []
    # exploit among members that meet every budget (the search's winner must); explore anywhere in the pool
    feasible = np.array([ctx.budgets.feasible(a) for a in sampled], dtype=bool)
    rank = np.where(feasible, np.asarray(scores), -np.inf) if feasible.any() else np.asarray(scores)
    order = [i for i in np.argsort(-rank, kind="stable") if np.isfinite(rank[i])]
    chosen = [Proposal(sampled[int(i)], "controller", float(scores[int(i)])) for i in order[:n_model]]
    taken = {p.arch for p in chosen}
    chosen += [Proposal(a, "epsilon") for a in _random_pick(ctx.pool, ctx.k - len(chosen), ctx.rng, taken)]
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
            extra = _random_pick(ctx.pool, 1, ctx.rng, taken)
            if not extra:
                break
            out.append(Proposal(extra[0], "random"))
            taken.add(extra[0])
        else:
            out.append(Proposal(child, "mutation"))
            taken.add(child)
    return out


STRATEGIES: dict[str, Callable[[ProposalContext], list[Proposal]]] = {
    "kdnas": propose_kdnas,
    "random": propose_random,
    "evolution": propose_evolution,
}


def _warm_up_kdnas() -> None:
    from kdnas_deploy.search.controller import warm_up_training

    warm_up_training()


# Optional per-strategy warm-up (one-time library costs) that the search may run while the executor starts.
STRATEGY_WARM_UPS: dict[str, Callable[[], None]] = {"kdnas": _warm_up_kdnas}

# Sections of the search configuration a strategy does not read: they do not block --resume of its run folder.
UNUSED_SETTINGS: dict[str, tuple[str, ...]] = {
    "kdnas": ("evolution",),
    "random": ("controller", "evolution"),
    "evolution": ("controller",),
}
