"""What every search strategy shares: the history it sees, the proposals it makes, the base class and the
registry (a strategy is one registered :class:`Strategy` subclass; ``--strategy NAME`` picks it).

Every strategy proposes ``k`` not-yet-evaluated architectures per episode from the *pool* (members of the
space not evaluated yet; only feasible ones under ``--hard-budget``). A proposal is a pure function of the
history of earlier episodes and a per-episode seeded generator, so strategies keep no state between episodes
and a resumed search proposes the same candidates. All strategies spend the same evaluation budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import ConfigError
from kdnas_deploy.space import SearchSpace

if TYPE_CHECKING:  # pragma: no cover
    from kdnas_deploy.search.budget import BudgetSet


@dataclass(frozen=True)
class Evaluated:
    """One finished evaluation as strategies see it."""

    arch: Architecture
    reward: float
    episode: int
    index: int


@dataclass(frozen=True)
class Proposal:
    """A candidate to evaluate, how it was chosen, and the strategy's predicted reward (if any)."""

    arch: Architecture
    source: str
    predicted_reward: float | None = None


@dataclass(frozen=True)
class ProposalContext:
    config: Any  # the SearchConfig (not imported here: the config module imports the strategies)
    space: SearchSpace
    budgets: BudgetSet
    episode: int
    k: int
    rng: np.random.Generator
    history: tuple[Evaluated, ...]  # earlier episodes only, sorted by (episode, index)
    pool: tuple[Architecture, ...]  # eligible, not yet evaluated, in space order


class Strategy:
    """A search strategy: ``propose`` is a pure function of the context (no state between episodes).

    ``sections``: the sections of the search configuration the strategy reads (its own settings); the
    sections of other strategies do not block ``--resume`` of its run folder. ``warm_up``: one-time library
    costs that the search may pay in a helper thread while a remote executor starts.
    """

    name: ClassVar[str] = ""
    sections: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def propose(cls, ctx: ProposalContext) -> list[Proposal]:
        raise NotImplementedError

    @classmethod
    def warm_up(cls) -> None:
        """Nothing to warm up by default."""


STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Register a :class:`Strategy` subclass under its ``name`` (usable as a class decorator)."""
    if not cls.name:
        raise ValueError(f"strategy class {cls.__name__} has no name")
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")
    return STRATEGIES[name]


def unused_sections(name: str) -> tuple[str, ...]:
    """Sections of the search configuration that strategy ``name`` does not read."""
    own = set(get_strategy(name).sections)
    return tuple(sorted({s for c in STRATEGIES.values() for s in c.sections} - own))


def random_pick(
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
