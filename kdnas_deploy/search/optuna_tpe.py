"""``optuna-tpe``: Optuna's TPE sampler (Bergstra et al. 2011) through its ask/tell interface, as a peer of the
KD-NAS controller in the same harness: same pool, same evaluation budget, same reward, same candidates log.

Like every strategy it keeps no state between episodes: each episode builds a new in-memory study, tells it
every earlier evaluation (architecture -> reward) and asks it for ``k`` candidates, with a sampler seeded by
the episode's generator, so a resumed search proposes the same candidates. One categorical parameter per
dimension (heads as the union over hidden sizes); an asked architecture outside the pool (heads that do not
divide the hidden size, already evaluated, over budget under ``--hard-budget``) is told as failed and asked
again; ``constant_liar`` keeps the ``k`` asks of one episode apart. Needs ``pip install 'kdnas-deploy[optuna]'``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import ArchitectureError, ConfigError, SearchError
from kdnas_deploy.search.proposals import Proposal, ProposalContext, Strategy, random_pick
from kdnas_deploy.space import DIMENSIONS

ASKS_PER_PROPOSAL = 25  # asks before a slot is filled at random (a pool nearly exhausted)


@dataclass(frozen=True)
class OptunaConfig:
    """Settings of the ``optuna-tpe`` strategy (TPESampler's)."""

    n_startup_trials: int = 8  # random trials before TPE models the rewards (two episodes of top_k 4)
    n_ei_candidates: int = 24

    def __post_init__(self) -> None:
        if self.n_startup_trials < 0 or self.n_ei_candidates < 1:
            raise ConfigError("optuna needs n_startup_trials >= 0 and n_ei_candidates >= 1")


def _optuna() -> Any:
    try:
        import optuna
    except ModuleNotFoundError:
        raise SearchError("strategy optuna-tpe needs Optuna: pip install 'kdnas-deploy[optuna]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # optuna's own logger: no line per trial
    return optuna


class OptunaTPEStrategy(Strategy):
    """Optuna's TPESampler via ask/tell (see the module docstring)."""

    name = "optuna-tpe"
    sections = ("optuna",)

    @classmethod
    def warm_up(cls) -> None:
        _optuna()

    @classmethod
    def propose(cls, ctx: ProposalContext) -> list[Proposal]:
        optuna = _optuna()
        lists = ctx.space.choice_lists()
        dists = {d: optuna.distributions.CategoricalDistribution(list(lists[d])) for d in DIMENSIONS}
        cfg: OptunaConfig = ctx.config.optuna
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=int(ctx.rng.integers(2**31 - 1)),
                n_startup_trials=cfg.n_startup_trials,
                n_ei_candidates=cfg.n_ei_candidates,
                constant_liar=True,
            )
            study = optuna.create_study(direction="maximize", sampler=sampler)
            for h in ctx.history:
                params = dict(zip(DIMENSIONS, h.arch.as_tuple(), strict=True))
                study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=h.reward))
            return cls._ask(study, dists, ctx, optuna)

    @staticmethod
    def _ask(study: Any, dists: dict[str, Any], ctx: ProposalContext, optuna: Any) -> list[Proposal]:
        pool = set(ctx.pool)
        out: list[Proposal] = []
        taken: set[Architecture] = set()
        for _ in range(ctx.k):
            for _attempt in range(ASKS_PER_PROPOSAL):
                trial = study.ask(dists)
                try:
                    arch = Architecture(*(int(trial.params[d]) for d in DIMENSIONS))
                except ArchitectureError:  # heads that do not divide the hidden size
                    arch = None
                if arch is not None and arch in pool and arch not in taken:
                    out.append(Proposal(arch, "tpe"))  # left running: the constant liar spreads the next asks
                    taken.add(arch)
                    break
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                extra = random_pick(ctx.pool, 1, ctx.rng, taken)
                if not extra:
                    break
                out.append(Proposal(extra[0], "random"))
                taken.add(extra[0])
        return out
