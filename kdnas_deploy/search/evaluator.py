"""The default evaluator: distill each candidate on a proxy set, score it on a held-out slice of train.

Data discipline: the training split is permuted once with the search seed into a held-out slice (the reward
metric is measured there, never on the dev split), a proxy set (sized by :mod:`kdnas_deploy.search.proxy_plan`:
``proxy_fraction`` of the training split raised to ``proxy_min_rows``, disjoint from the held-out slice) and
the rest. The final distillation trains on everything but the held-out
slice, picks its checkpoint and the winner on the held-out slice, and only then reports dev metrics.
Teacher outputs are cached in ``cache_dir`` (inside the run folder by default) so the teacher runs once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.distill import DistillConfig, distill, prepare_teacher_cache
from kdnas_deploy.distill.evaluate import evaluate_model
from kdnas_deploy.errors import DataError, ModelError, SearchError
from kdnas_deploy.search.executor import EvalRequest, EvalResult
from kdnas_deploy.search.proxy_plan import ProxyPlan, final_epochs, plan_proxy
from kdnas_deploy.tasks import get_task
from kdnas_deploy.tasks.baselines import retained_gains

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSplit:
    """Row indices of the training split: held-out slice, proxy set, and everything but the held-out slice."""

    heldout: np.ndarray
    proxy: np.ndarray
    full: np.ndarray


def split_train(n: int, proxy_fraction: float, heldout_size: int, seed: int, proxy_n: int | None = None) -> TrainSplit:
    """Seeded, disjoint held-out slice and proxy set of a training split of ``n`` rows (indices sorted).
    ``proxy_n``: the proxy set's rows (default ``proxy_fraction`` of ``n``); a larger one is a superset."""
    if n < 2:
        raise DataError(f"the training split has {n} row(s); a search needs at least 2")
    heldout_n = min(heldout_size, max(1, n // 5))
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    heldout = np.sort(perm[:heldout_n])
    rest = perm[heldout_n:]
    want = max(1, round(proxy_fraction * n)) if proxy_n is None else max(1, int(proxy_n))
    proxy_n = int(min(len(rest), want))
    return TrainSplit(heldout=heldout, proxy=np.sort(rest[:proxy_n]), full=np.sort(rest))


def load_task(name: str, data_dir: str | None) -> Any:
    return get_task(name, data_dir=data_dir)


def teacher_architecture(teacher: str | Path, task: Any) -> Architecture:
    """The teacher's Architecture; refuses a non-model folder or labels that do not fit the task."""
    from transformers import AutoConfig

    path = Path(teacher)
    if not (path / "config.json").is_file():
        raise ModelError(f"teacher {path} is not a model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"teacher {path}: cannot read its config ({str(exc).splitlines()[0]})") from None
    trained_on = _recorded_task(path)
    if trained_on is not None and trained_on != task.name:
        raise SearchError(f"teacher {path} was fine-tuned on task {trained_on!r}, not {task.name!r}: wrong teacher")
    expected = 1 if task.is_regression else task.num_labels
    if int(getattr(config, "num_labels", -1)) != expected:
        raise SearchError(
            f"teacher {path} has {config.num_labels} output label(s) but task {task.name!r} needs {expected}:"
            " wrong teacher for this task"
        )
    return Architecture.from_config(config)


def _recorded_task(teacher: Path) -> str | None:
    """The task a teacher was fine-tuned on, from its ``teacher_record.json`` (None when not recorded)."""
    import json

    record = teacher / "teacher_record.json"
    try:
        name = json.loads(record.read_text(encoding="utf-8"))["task"]["name"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return str(name) if name else None


@dataclass
class DistillEvaluator:
    """Proxy distillation of candidates (``evaluate``) and full distillation of the winners (``final``)."""

    teacher: str
    task: str
    data_dir: str | None
    proxy_fraction: float
    heldout_size: int
    split_seed: int
    cache_dir: str
    proxy_epochs: float | None = None
    final_epochs: float | None = None
    proxy_min_rows: int = 0
    proxy_min_steps: int = 0
    final_min_steps: int = 0  # optimizer steps of the final distillation, at least (epochs raised; 0: off)
    max_seq_len: int | None = None  # of proxy and final distillations and their scoring; None: the presets'
    # DistillConfig settings of the final distillation over DistillConfig.full()'s (e.g. augment_copies); the
    # search leaves it empty, tools/bench_final_variants.py compares recipes of a finished run's winner with it
    final_overrides: dict[str, Any] = field(default_factory=dict)
    progress: bool = False  # progress bars of the proxy distillations
    final_progress: bool = True  # progress bar of the full distillation of a winner (minutes long)
    _state: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:  # ship the spec, not loaded data, to remote workers
        state = dict(self.__dict__)
        state["_state"] = None
        return state

    def describe(self) -> dict[str, Any]:
        return {"kind": "distill", "teacher": self.teacher, "task": self.task, "cache_dir": self.cache_dir}

    def _load(self) -> dict[str, Any]:
        if self._state is None:
            task = load_task(self.task, self.data_dir)
            train = task.load_split("train")
            plan = self.plan(len(train))
            split = split_train(len(train), self.proxy_fraction, self.heldout_size, self.split_seed, plan.proxy)
            self._state = {
                "task": task,
                "train": train,
                "plan": plan,
                "proxy": train.select(split.proxy.tolist()),
                "heldout": train.select(split.heldout.tolist()),
                "full": train.select(split.full.tolist()),
                "sizes": {"train": len(train), "proxy": len(split.proxy), "heldout": len(split.heldout)},
                "scaled": {},
            }
        return self._state

    def plan(self, n: int, scale: float = 1.0) -> ProxyPlan:
        """The proxy plan of a train split of ``n`` rows at ``scale`` times the proxy budget."""
        base = DistillConfig.proxy()
        return plan_proxy(n, self.proxy_fraction, self.heldout_size, self.proxy_epochs or base.epochs,
                          base.batch_size, self.proxy_min_rows, self.proxy_min_steps, scale)  # fmt: skip

    def proxy_plan(self, scale: float = 1.0) -> dict[str, Any]:
        """The plan at ``scale`` (loads the data): sizes, epochs, optimizer steps, held-out standard error."""
        return self._scaled(scale)[1].to_dict()

    def _scaled(self, scale: float) -> tuple[Any, ProxyPlan]:
        """The proxy set and plan at ``scale`` (1: the search's; 2: after a degenerate search)."""
        st = self._load()
        if scale == 1:
            return st["proxy"], st["plan"]
        if scale not in st["scaled"]:
            n = len(st["train"])
            plan = self.plan(n, scale)
            split = split_train(n, self.proxy_fraction, self.heldout_size, self.split_seed, plan.proxy)
            st["scaled"][scale] = (st["train"].select(split.proxy.tolist()), plan)
        return st["scaled"][scale]

    def prepare(self) -> None:
        Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
        self._load()

    def warm_up(self) -> None:
        """One-time work before the first candidate, which a remote executor runs on one worker while the
        driver prepares: load the data and fill the proxy set's teacher-output cache, which every candidate
        (on any worker) then only reads. In-process, the first candidate does the same."""
        st = self._load()
        prepare_teacher_cache(
            self.teacher, st["task"], config=self._proxy_config(0, st["plan"]), train=st["proxy"],
            cache_dir=self.cache_dir,
        )

    def _proxy_config(self, seed: int, plan: ProxyPlan) -> Any:
        cfg = DistillConfig.proxy()
        length = {"max_seq_len": self.max_seq_len} if self.max_seq_len else {}
        return replace(cfg, seed=seed, epochs=plan.epochs, **length)

    def evaluate(self, request: EvalRequest) -> EvalResult:
        st = self._load()
        proxy, plan = self._scaled(float(getattr(request, "proxy_scale", 1.0)))
        cfg = self._proxy_config(request.seed, plan)
        t0 = time.perf_counter()
        res = distill(
            self.teacher,
            request.arch,
            st["task"],
            config=cfg,
            train=proxy,
            eval=st["heldout"],
            out_dir=None,
            cache_dir=self.cache_dir,
            progress=self.progress,
        )
        return EvalResult(
            request=request,
            score=float(res.score),
            final_loss=float(res.final_loss),
            seconds=time.perf_counter() - t0,
            metrics=_numeric(res.metrics),
            info={
                "train_seconds": float(res.train_seconds),
                "heldout_n": int(res.eval_examples or len(st["heldout"])),
                "main_metric": st["task"].main_metric,
                "baseline": res.baseline.get(st["task"].main_metric),
                "proxy_rows": plan.proxy,
                "proxy_epochs": plan.epochs,
                "proxy_steps": plan.steps,
                "proxy_scale": plan.scale,
            },
        )

    def final(self, arch: Architecture, seed: int, out_dir: Path) -> dict[str, Any]:
        st = self._load()
        reused = _finished_model(Path(out_dir), st["task"])
        if reused is not None:  # killed after the model was published, before its result was recorded
            return {**reused, **self._dev_facts(out_dir, st["task"]), "data_sizes": st["sizes"]}
        cfg = replace(DistillConfig.full(**self.final_overrides), seed=seed)
        if self.max_seq_len:
            cfg = replace(cfg, max_seq_len=self.max_seq_len)
        if self.final_epochs:
            cfg = replace(cfg, epochs=self.final_epochs)
        rows = len(st["full"]) * (1 + cfg.augment_copies)  # masked copies are optimizer steps too
        epochs = final_epochs(rows, cfg.epochs, cfg.batch_size, self.final_min_steps)
        if epochs != cfg.epochs:
            log.info("final: %g epoch(s) instead of %g: %d train rows need them for final_min_steps %d", epochs,
                     cfg.epochs, rows, self.final_min_steps)  # fmt: skip
            cfg = replace(cfg, epochs=epochs)
        res = distill(
            self.teacher,
            arch,
            st["task"],
            config=cfg,
            train=st["full"],
            eval=st["heldout"],
            out_dir=str(out_dir),
            cache_dir=self.cache_dir,
            progress=self.final_progress,
        )
        model_dir = res.model_dir or str(out_dir)
        return {
            "score": float(res.score),
            "final_loss": float(res.final_loss),
            "heldout_metrics": _numeric(res.metrics),
            "heldout_baseline": res.baseline,
            **self._dev_facts(model_dir, st["task"]),
            "model_dir": model_dir,
            "train_seconds": float(res.train_seconds),
            "data_sizes": st["sizes"],
            "final_epochs": cfg.epochs,
        }

    def _dev_facts(self, model_dir: str | Path, task: Any) -> dict[str, Any]:
        """The student's dev metrics, the dev split's trivial baseline and, when the teacher's dev metrics are
        recorded (``dev_metrics.json`` of ``teacher finetune``), the retained ratio and gain over the baseline."""
        doc = evaluate_model(model_dir, task, split="dev", progress=False)
        names = set(getattr(task, "metric_names", ())) or {"accuracy"}
        dev = {k: float(v) for k, v in doc.items() if k in names}
        baseline = {k: float(v) for k, v in (doc.get("baseline") or {}).items()}
        teacher = teacher_dev_metrics(self.teacher, names)
        facts: dict[str, Any] = {"dev_metrics": dev, "dev_baseline": baseline}
        if teacher:
            facts["teacher_dev_metrics"] = teacher
            facts["retained"] = {k: (dev[k] / teacher[k] if teacher[k] else None) for k in dev if k in teacher}
            facts["retained_gain"] = retained_gains(dev, teacher, baseline)
        return facts


def teacher_dev_metrics(teacher: str | Path, names: set[str]) -> dict[str, float]:
    """The teacher's recorded dev metrics (``dev_metrics.json``), empty when it has none."""
    import json

    try:
        doc = json.loads((Path(teacher) / "dev_metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: float(v) for k, v in doc.items() if k in names and isinstance(v, int | float)}


def _finished_model(out_dir: Path, task: Any) -> dict[str, Any] | None:
    """The result of a distillation already published in ``out_dir`` (its ``distill_record.json``)."""
    import json

    record = out_dir / "distill_record.json"
    if not record.is_file():
        return None
    try:
        doc = json.loads(record.read_text(encoding="utf-8"))
        return {
            "score": float(doc["metrics"][task.main_metric]),
            "final_loss": float(doc["final_loss"]),
            "heldout_metrics": _numeric(doc["metrics"]),
            "model_dir": str(out_dir),
            "train_seconds": float(doc.get("train_seconds", 0.0)),
            "reused": True,
        }
    except (KeyError, ValueError, TypeError, json.JSONDecodeError):
        return None


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float | np.floating | np.integer)}


def evaluate_model_dir(model_dir: str | Path, task: Any, split: str = "dev") -> dict[str, float]:
    """Task metrics of a saved classifier on ``split`` (the distill package's evaluator)."""
    doc = evaluate_model(model_dir, task, split=split, progress=False)
    names = set(getattr(task, "metric_names", ())) or {"accuracy"}
    return {k: float(v) for k, v in doc.items() if k in names}
