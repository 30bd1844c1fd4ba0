"""Legitimate test doubles for the search logic: an analytic FLOPs latency predictor and a deterministic
synthetic evaluator whose metric depends on the architecture (bigger students score higher, with seeded
noise). They exercise the search, not the distillation or the latency tables (tested in their own stages)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.search.executor import BaseExecutor, EvalRequest, EvalResult
from kdnas_deploy.space import SearchSpace

TINY_SPACE = SearchSpace.from_dict(
    {
        "name": "tiny",
        "teacher": {"num_layers": 4, "hidden_size": 96, "num_heads": 4, "ffn_size": 256},
        "choices": {
            "num_layers": [1, 2, 3, 4],
            "hidden_size": [32, 64, 96],
            "num_heads": [2, 4],
            "ffn_size": [64, 128, 256],
        },
    }
)


class FlopsPredictor:
    """Latency proportional to FLOPs at batch 1, seq 128, plus a fixed cost (milliseconds)."""

    def __init__(
        self,
        space: SearchSpace = TINY_SPACE,
        ms_per_mflop: float = 0.01,
        fixed_ms: float = 0.2,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.space, self.ms_per_mflop, self.fixed_ms = space, ms_per_mflop, fixed_ms
        self.device, self.precision = device, precision

    def predict(
        self, archs: Architecture | Sequence[Architecture], batch: int | None = None, seq: int | None = None
    ) -> np.ndarray:
        archs = [archs] if isinstance(archs, Architecture) else list(archs)
        for a in archs:
            self.space.check(a)
        return np.array([self.fixed_ms + self.ms_per_mflop * a.flops(batch or 1, seq or 128) / 1e6 for a in archs])


def synthetic_metric(arch: Architecture, seed: int, noise: float = 0.004) -> float:
    cap = (
        0.45 * math.log(arch.num_layers + 1) / math.log(5)
        + 0.35 * math.log(arch.hidden_size / 16) / math.log(6)
        + 0.15 * math.log(arch.ffn_size / 32) / math.log(8)
        + (0.05 if arch.head_dim >= 24 else 0.0)
    )
    return 0.5 + 0.45 * (1 - math.exp(-2.0 * cap)) + float(np.random.default_rng(seed).normal(0, noise))


class SyntheticEvaluator:
    """Deterministic per request; counts its calls; optional interrupt after N evaluations (a 'kill')."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.calls: list[Architecture] = []
        self.prepared = 0
        self.interrupt_after = interrupt_after

    def prepare(self) -> None:
        self.prepared += 1

    def describe(self) -> dict[str, Any]:
        return {"kind": "synthetic"}

    def evaluate(self, request: EvalRequest) -> EvalResult:
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(request.arch)
        m = synthetic_metric(request.arch, request.seed)
        return EvalResult(request, score=m, final_loss=1.0 - m, seconds=0.01, metrics={"accuracy": m})

    def final(self, arch: Architecture, seed: int, out_dir: Path) -> dict[str, Any]:
        from kdnas_deploy.student import build_student

        build_student(arch, seed=seed, vocab_size=128, max_position_embeddings=64).save_pretrained(out_dir)
        m = synthetic_metric(arch, seed, noise=0.0)
        return {
            "score": m,
            "final_loss": 1 - m,
            "dev_metrics": {"accuracy": m - 0.01},
            "model_dir": str(out_dir),
        }


class SlowEvaluator(SyntheticEvaluator):
    """The synthetic evaluator, 0.4 s per candidate: long enough to cancel or kill a running one."""

    def evaluate(self, request: EvalRequest) -> EvalResult:
        time.sleep(0.4)
        return super().evaluate(request)


class ReversedExecutor(BaseExecutor):
    """Yields each batch's results in reverse order (what a parallel engine may do)."""

    def run(self, evaluator: Any, requests: Sequence[EvalRequest]) -> Iterator[EvalResult]:
        yield from reversed([evaluator.evaluate(r) for r in requests])


class RecordingExecutor(ReversedExecutor):
    """Records its lifecycle calls (``begin``, ``start``, ``close``) in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def begin(self) -> None:
        self.calls.append("begin")

    def start(self, evaluator: Any) -> None:
        self.calls.append("start")

    def close(self) -> None:
        self.calls.append("close")


def make_run(
    run_dir: Path,
    *,
    strategy: str = "kdnas",
    budget_ms: float | None = None,
    evaluator: Any = None,
    executor: Any = None,
    resume: bool = False,
    seed: int = 0,
    hard_budget: bool = False,
    finalize: bool = True,
    extra_budget_ms: float | None = None,
    **settings: Any,
) -> Any:
    """A SearchRun over the tiny space with the FLOPs predictor(s) and the synthetic evaluator."""
    from kdnas_deploy.search.budget import Budget, BudgetSet
    from kdnas_deploy.search.config import BudgetSpec, RewardConfig, SearchConfig
    from kdnas_deploy.search.run import SearchRun

    teacher_ms = float(FlopsPredictor().predict([TINY_SPACE.teacher])[0])
    budget_ms = budget_ms if budget_ms is not None else round(teacher_ms / 3, 4)
    budgets = [Budget(FlopsPredictor(), budget_ms, "cpu-fp32")]
    specs = [BudgetSpec("analytic-flops", budget_ms, "cpu-fp32")]
    if extra_budget_ms is not None:  # a second 'device' whose cost weighs FFN width more
        budgets.append(
            Budget(FlopsPredictor(ms_per_mflop=0.02, fixed_ms=0.05, device="cuda"), extra_budget_ms, "cuda-fp16")
        )
        specs.append(BudgetSpec("analytic-flops-2", extra_budget_ms, "cuda-fp16"))
    defaults = dict(episodes=4, candidates=40, top_k=3, final_top=1 if finalize else 0)
    defaults.update(settings)
    cfg = SearchConfig(
        teacher="synthetic",
        task="synthetic",
        budgets=tuple(specs),
        strategy=strategy,
        seed=seed,
        reward=RewardConfig(hard_budget=hard_budget),
        **defaults,
    )
    ev = evaluator or SyntheticEvaluator()
    return SearchRun(
        run_dir,
        cfg,
        BudgetSet(budgets),
        ev,
        executor=executor,
        finalizer=ev if finalize else None,
        resume=resume,
        teacher_arch=TINY_SPACE.teacher,
        echo=lambda s: None,
    )
