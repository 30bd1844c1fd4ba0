"""Frozen configuration of a KD-NAS search, with named presets and a strict dict round trip.

The resolved configuration is written to ``RUN_DIR/config.yaml``; ``--resume`` compares the stored one with
the new one field by field and refuses a run folder whose search configuration differs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from kdnas_deploy.errors import ConfigError

CONFIG_SCHEMA_VERSION = 1
REWARD_METRICS = ("task", "loss")
CONTROLLER_PRIORS = ("log-latency", "none")


@dataclass(frozen=True)
class BudgetSpec:
    """One latency budget: a latency table (path) and the budget in milliseconds."""

    table: str
    budget_ms: float
    name: str = ""
    table_sha256: str = ""


@dataclass(frozen=True)
class RewardConfig:
    """MnasNet-style reward ``metric * prod_b (latency_b / budget_b) ** w`` with ``w = alpha`` or ``beta``."""

    alpha: float = -0.07
    beta: float = -0.07
    hard_budget: bool = False
    metric: str = "task"  # "task": task metric on the held-out train slice; "loss": 1 - normalised KD loss


@dataclass(frozen=True)
class ControllerConfig:
    """The LSTM reward regressor of the ``kdnas`` strategy and its epsilon-greedy exploration."""

    embed_dim: int = 16
    hidden_dim: int = 32
    train_steps: int = 300
    learning_rate: float = 0.01
    epsilon_start: float = 0.5
    epsilon_end: float = 0.05
    # A ridge regression of the reward on the candidate's log latency ratios (one hinge at each budget) that
    # the LSTM corrects: a handful of rewards already shows "more of the budget, higher accuracy", which the
    # LSTM alone cannot learn from so few samples. "none": the LSTM alone (the original KD-NAS controller).
    prior: str = "log-latency"
    prior_ridge: float = 0.1


@dataclass(frozen=True)
class EvolutionConfig:
    """Regularized evolution (Real et al. 2019): population with aging, tournament selection."""

    population: int = 12
    tournament: int = 4


@dataclass(frozen=True)
class SearchConfig:
    """Everything that determines a search's results (and nothing that does not, like the executor)."""

    teacher: str
    task: str
    budgets: tuple[BudgetSpec, ...]
    data_dir: str | None = None
    strategy: str = "kdnas"
    episodes: int = 8
    candidates: int = 200
    top_k: int = 4
    proxy_fraction: float = 0.1
    heldout_size: int = 1000
    proxy_epochs: float | None = None  # None: DistillConfig.proxy()'s
    final_epochs: float | None = None  # None: DistillConfig.full()'s
    final_top: int = 1
    seed: int = 0
    batch: int | None = None
    seq: int | None = None
    reward: RewardConfig = field(default_factory=RewardConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)

    def __post_init__(self) -> None:
        from kdnas_deploy.search.strategies import STRATEGIES

        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r} (choose from {', '.join(STRATEGIES)})")
        if not self.budgets:
            raise ConfigError("a search needs at least one latency budget (--table/--budget-ms or --budget)")
        for b in self.budgets:
            if not b.budget_ms > 0:
                raise ConfigError(f"budget {b.name or b.table}: budget_ms must be > 0, got {b.budget_ms}")
        names = [b.name for b in self.budgets]
        if len(set(names)) != len(names):
            raise ConfigError(f"budget names must be unique, got {names}")
        for name in ("episodes", "candidates", "top_k", "heldout_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.candidates < self.top_k:
            raise ConfigError(f"candidates ({self.candidates}) must be >= top_k ({self.top_k})")
        if not 0.0 < self.proxy_fraction <= 1.0:
            raise ConfigError(f"proxy_fraction must be in (0, 1], got {self.proxy_fraction}")
        if self.final_top < 0:
            raise ConfigError(f"final_top must be >= 0, got {self.final_top}")
        for name in ("proxy_epochs", "final_epochs"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if self.reward.metric not in REWARD_METRICS:
            raise ConfigError(f"reward metric must be one of {REWARD_METRICS}, got {self.reward.metric!r}")
        c = self.controller
        if not (0.0 <= c.epsilon_end <= 1.0 and 0.0 <= c.epsilon_start <= 1.0):
            raise ConfigError("epsilon_start and epsilon_end must be in [0, 1]")
        if c.prior not in CONTROLLER_PRIORS:
            raise ConfigError(f"controller prior must be one of {CONTROLLER_PRIORS}, got {c.prior!r}")
        if not c.prior_ridge >= 0:
            raise ConfigError(f"controller prior_ridge must be >= 0, got {c.prior_ridge}")
        if self.evolution.tournament < 1 or self.evolution.population < self.evolution.tournament:
            raise ConfigError("evolution needs 1 <= tournament <= population")

    @property
    def evaluations(self) -> int:
        """The evaluation budget: proxy distillations the search may run (the same for every strategy)."""
        return self.episodes * self.top_k

    def epsilon(self, episode: int) -> float:
        """Exploration rate of ``episode``: linear decay from ``epsilon_start`` to ``epsilon_end``."""
        c = self.controller
        if self.episodes <= 1:
            return c.epsilon_end
        t = min(max(episode, 0), self.episodes - 1) / (self.episodes - 1)
        return c.epsilon_start + t * (c.epsilon_end - c.epsilon_start)

    # ------------------------------------------------------------------ dict round trip
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["budgets"] = [asdict(b) for b in self.budgets]
        return {"schema_version": CONFIG_SCHEMA_VERSION, **d}

    @classmethod
    def from_dict(cls, data: Any) -> SearchConfig:
        if not isinstance(data, dict):
            raise ConfigError("search config must be a mapping")
        data = dict(data)
        version = data.pop("schema_version", CONFIG_SCHEMA_VERSION)
        if version != CONFIG_SCHEMA_VERSION:
            raise ConfigError(f"search config schema_version {version} is not supported ({CONFIG_SCHEMA_VERSION})")
        nested = {"reward": RewardConfig, "controller": ControllerConfig, "evolution": EvolutionConfig}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in nested:
                kwargs[key] = _build(nested[key], value, key)
            elif key == "budgets":
                if not isinstance(value, list):
                    raise ConfigError("budgets must be a list")
                kwargs[key] = tuple(_build(BudgetSpec, b, "budgets[]") for b in value)
            else:
                kwargs[key] = value
        return _build(cls, kwargs, "search")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# Named presets: overrides applied on top of the defaults (CLI options override a preset in turn).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # A few minutes on the built-in task: smoke runs and the quickstart.
    "quick": {"episodes": 3, "top_k": 2, "candidates": 50, "proxy_fraction": 0.2, "heldout_size": 200},
    # The SST-2 benchmark of issue 5: 10 episodes x 4 candidates on a 10% proxy set.
    "sst2-bench": {
        "episodes": 10,
        "top_k": 4,
        "candidates": 200,
        "proxy_fraction": 0.1,
        "heldout_size": 1000,
    },
}


def preset(name: str, **overrides: Any) -> dict[str, Any]:
    """The keyword arguments of preset ``name`` updated with ``overrides`` (``None`` values ignored)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown search preset {name!r} (choose from {', '.join(PRESETS)})")
    out = dict(PRESETS[name])
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (for the ``--resume`` check)."""
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(config_diff(a, b, name + "."))
        elif _norm(a) != _norm(b):
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def _norm(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


__all__ = [
    "BudgetSpec",
    "ControllerConfig",
    "EvolutionConfig",
    "PRESETS",
    "RewardConfig",
    "SearchConfig",
    "config_diff",
    "preset",
]
