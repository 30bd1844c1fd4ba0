"""Frozen configuration of a KD-NAS search, with named presets (data) and a strict dict round trip.

The resolved configuration is written to ``RUN_DIR/config.yaml``; ``--resume`` compares the stored one with
the new one field by field and refuses a run folder whose search configuration differs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from kdnas_deploy.config import Presets, build
from kdnas_deploy.errors import ConfigError
from kdnas_deploy.limits import MAX_EPOCHS, check_float, check_int
from kdnas_deploy.search.budget import BudgetSpec, check_budgets
from kdnas_deploy.search.strategies import ControllerConfig, EvolutionConfig, OptunaConfig, get_strategy

CONFIG_SCHEMA_VERSION = 1
REWARD_METRICS = ("task", "loss")
CONTROLLER_PRIORS = ("log-latency", "none")
ON_DEGENERATE = ("escalate", "stop", "warn")
# settings added after run folders were first written: a stored config without one had its default
ADDED_SETTINGS = {"proxy_min_rows": 0, "proxy_min_steps": 0, "max_seq_len": None, "final_min_steps": 0}


@dataclass(frozen=True)
class RewardConfig:
    """MnasNet-style reward ``metric * prod_b (latency_b / budget_b) ** w`` with ``w = alpha`` or ``beta``."""

    alpha: float = -0.07
    beta: float = -0.07
    hard_budget: bool = False
    metric: str = "task"  # "task": task metric on the held-out train slice; "loss": 1 - normalised KD loss

    def __post_init__(self) -> None:
        if self.metric not in REWARD_METRICS:
            raise ConfigError(f"reward metric must be one of {REWARD_METRICS}, got {self.metric!r}")


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """The settings of a search that do not name its inputs: what ``search:`` of a ``run`` config and the
    search presets hold. :class:`SearchConfig` adds the teacher, the task and the budgets."""

    strategy: str = "kdnas"
    episodes: int = 8
    candidates: int = 200
    top_k: int = 4
    proxy_fraction: float = 0.1
    heldout_size: int = 1000
    proxy_epochs: float | None = None  # None: DistillConfig.proxy()'s
    # proxy sizing from the train split (kdnas_deploy.search.proxy_plan): the proxy set has at least this many
    # rows and every candidate at least this many optimizer steps (0: off)
    proxy_min_rows: int = 0
    proxy_min_steps: int = 0
    # a degenerate search (tied, or within noise of the trivial baseline): ``escalate`` re-evaluates every
    # candidate once at twice the proxy budget and stops with a SearchError when still degenerate; ``stop``
    # stops at once; ``warn`` only warns and crowns the draw
    on_degenerate: str = "escalate"
    # token length of the proxy and final distillations and of their scoring (None: the presets'); ``run`` sets
    # the teacher's
    max_seq_len: int | None = None
    final_epochs: float | None = None  # None: DistillConfig.full()'s
    # the final distillation makes at least this many optimizer steps (its epochs raised on a small train split,
    # at most kdnas_deploy.search.proxy_plan.MAX_FINAL_EPOCHS; 0: off); the held-out slice picks its best epoch
    final_min_steps: int = 0
    final_top: int = 1
    seed: int = 0
    batch: int | None = None
    seq: int | None = None
    reward: RewardConfig = field(default_factory=RewardConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    optuna: OptunaConfig = field(default_factory=OptunaConfig)

    def __post_init__(self) -> None:
        get_strategy(self.strategy)  # ConfigError naming the registered strategies
        for name in ("episodes", "candidates", "top_k", "heldout_size"):
            check_int(name, getattr(self, name), "count")
        check_int("final_top", self.final_top, "count0")
        for name in ("proxy_min_rows", "proxy_min_steps", "final_min_steps"):
            check_int(name, getattr(self, name), "count0")
        if self.on_degenerate not in ON_DEGENERATE:
            raise ConfigError(f"on_degenerate must be one of {', '.join(ON_DEGENERATE)}, got {self.on_degenerate!r}")
        if self.max_seq_len is not None and not 8 <= self.max_seq_len <= 512:
            raise ConfigError(f"max_seq_len must be in [8, 512], got {self.max_seq_len}")
        check_int("seed", self.seed, "seed")
        if self.candidates < self.top_k:
            raise ConfigError(f"candidates ({self.candidates}) must be >= top_k ({self.top_k})")
        if not 0.0 < self.proxy_fraction <= 1.0:
            raise ConfigError(f"proxy_fraction must be in (0, 1], got {self.proxy_fraction}")
        if self.final_top < 0:
            raise ConfigError(f"final_top must be >= 0, got {self.final_top}")
        for name in ("proxy_epochs", "final_epochs"):
            value = getattr(self, name)
            if value is not None:
                check_float(name, value, high=MAX_EPOCHS)

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

    def settings(self) -> dict[str, Any]:
        """The settings as keyword arguments (nested sections as dataclasses)."""
        return {f.name: getattr(self, f.name) for f in fields(SearchSettings)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "search") -> Any:
        """Strict: unknown keys and wrong types refused with one line naming the key."""
        if isinstance(data, dict):
            data = dict(data)
            version = data.pop("schema_version", CONFIG_SCHEMA_VERSION)
            if version != CONFIG_SCHEMA_VERSION:
                raise ConfigError(f"{where} schema_version {version} is not supported ({CONFIG_SCHEMA_VERSION})")
        return build(cls, data, where)


@dataclass(frozen=True, kw_only=True)
class SearchConfig(SearchSettings):
    """Everything that determines a search's results (and nothing that does not, like the executor)."""

    teacher: str
    task: str
    budgets: tuple[BudgetSpec, ...]
    data_dir: str | None = None

    def __post_init__(self) -> None:
        check_budgets([b.name for b in self.budgets], [b.budget_ms for b in self.budgets], ConfigError)
        super().__post_init__()

    @classmethod
    def from_settings(cls, settings: SearchSettings, **inputs: Any) -> SearchConfig:
        """The configuration of ``settings`` applied to the inputs (``teacher``, ``task``, ``budgets``, ...)."""
        return cls(**settings.settings(), **inputs)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["budgets"] = [asdict(b) for b in self.budgets]
        return {"schema_version": CONFIG_SCHEMA_VERSION, **d}


@dataclass(frozen=True)
class ExecutorConfig:
    """Where candidates run: an executor of :data:`~kdnas_deploy.search.executor.EXECUTORS` and its options
    (for ``ray``: ``address``, ``cpus_per_candidate``, ``gpus_per_candidate``, ``max_retries``, ...)."""

    name: str = "local"
    options: dict[str, Any] = field(default_factory=dict)


# Named presets of the search settings (data; CLI options and YAML keys override a preset in turn).
PRESETS: Presets[SearchSettings] = Presets(
    "search",
    SearchSettings.from_dict,
    data={
        "default": {},
        # A few minutes on the built-in task: smoke runs and the quickstart.
        "quick": {"episodes": 3, "top_k": 2, "candidates": 50, "proxy_fraction": 0.2, "heldout_size": 200},
        # The SST-2 benchmark of issue 5: 10 episodes x 4 candidates on a 10% proxy set.
        "sst2-bench": {"episodes": 10, "top_k": 4, "candidates": 200, "proxy_fraction": 0.1, "heldout_size": 1000},
        # GLUE tasks of any size: small ones (2-10k rows) give the proxy 2000 rows and 150 steps per candidate,
        # and the final distillation 1500 steps (docs/RESULTS.md: a 2-layer STS-B student at 2 epochs, 360 steps,
        # kept 0.45 pearson; at 1080 steps 0.70)
        "glue": {"episodes": 6, "top_k": 3, "candidates": 200, "proxy_fraction": 0.1, "heldout_size": 1000,
                 "proxy_min_rows": 2000, "proxy_min_steps": 150, "final_min_steps": 1500},
    },
)
SEARCH_PRESETS = PRESETS


def preset(name: str, **overrides: Any) -> dict[str, Any]:
    """The settings of preset ``name`` updated with ``overrides`` (``None`` values ignored), as a mapping."""
    return PRESETS.merged(name, **overrides)


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
    "ExecutorConfig",
    "OptunaConfig",
    "PRESETS",
    "RewardConfig",
    "SEARCH_PRESETS",
    "SearchConfig",
    "SearchSettings",
    "config_diff",
    "preset",
]
