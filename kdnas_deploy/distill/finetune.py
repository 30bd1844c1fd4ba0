"""``teacher finetune``: fine-tune a pretrained encoder into a task teacher (a normal HF folder)."""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas_deploy.distill.data import encode, evaluate_logits, predict, publishable
from kdnas_deploy.distill.loop import LoopConfig, publish_best, run_loop
from kdnas_deploy.distill.teachers import load_backbone_for_finetune, load_tokenizer, resolve_model
from kdnas_deploy.errors import ConfigError
from kdnas_deploy.io import FolderLock, atomic_directory, atomic_write_json
from kdnas_deploy.tasks.baselines import WeakTeacher, task_baseline, weak_teacher

if TYPE_CHECKING:  # pragma: no cover
    import datasets

    from kdnas_deploy.tasks import Task

RECORD_SCHEMA_VERSION = 1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 5e-5
    max_seq_len: int = 128
    seed: int = 42
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_train_samples: int | None = None
    checkpoint_every: int = 200

    @classmethod
    def default(cls) -> FinetuneConfig:
        return cls()

    @classmethod
    def fast(cls) -> FinetuneConfig:
        """Short single-sentence tasks on CPU (e.g. SST-2): one epoch, length 64, larger learning rate."""
        return cls(epochs=1.0, batch_size=32, learning_rate=1e-4, max_seq_len=64)

    def with_overrides(self, **kwargs: Any) -> FinetuneConfig:
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})

    def check(self) -> None:
        """Refuse numbers no fine-tuning can use (``epochs 0`` would publish an untrained teacher)."""
        checks = {
            "epochs": 0 < self.epochs <= 1000,
            "batch_size": 1 <= self.batch_size <= 1 << 20,
            "learning_rate": 0 < self.learning_rate <= 1e3,
            "max_seq_len": 8 <= self.max_seq_len <= 1 << 16,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "weight_decay": self.weight_decay >= 0,
            "max_train_samples": self.max_train_samples is None or self.max_train_samples >= 1,
            "checkpoint_every": self.checkpoint_every >= 0,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(f"teacher finetune: {name} = {value!r} is out of range")


FINETUNE_PRESETS = {"default": FinetuneConfig.default, "fast": FinetuneConfig.fast}
"""The fixed presets as factories (kept for callers of earlier releases); every named recipe, and ``auto``, is in
:mod:`kdnas_deploy.distill.recipes` and resolved per task by :func:`teacher_config`."""


def teacher_config(task: Task, model: str | Path = "minilm-l6", preset: str = "auto", tokenizer: Any = None,
                   **overrides: Any) -> tuple[FinetuneConfig, dict[str, Any]]:  # fmt: skip
    """The one factory of teacher configs: ``preset`` (``auto``, ``default``, ``fast``, ``glue-small``, ...)
    resolved for ``task`` (size tier, length from its token lengths), then ``overrides`` (None: keep).
    Returns the config and the record of the choice (written to ``teacher_record.json`` as ``recipe``)."""
    from kdnas_deploy.distill import recipes

    source = resolve_model(model)
    if tokenizer is None:
        tokenizer = load_tokenizer(source)
    max_train = overrides.get("max_train_samples")
    rows = len(task.load_split("train"))
    choice = recipes.resolve(preset, task, tokenizer, train_rows=min(rows, max_train) if max_train else rows,
                             hidden_size=model_width(source))  # fmt: skip
    config = FinetuneConfig(**choice.settings).with_overrides(**overrides)
    config.check()
    doc = choice.to_dict()
    doc["overrides"] = {k: v for k, v in overrides.items() if v is not None}
    return config, doc


def model_width(source: str | Path) -> int | None:
    """The ``hidden_size`` of the config at ``source`` (what :func:`resolve_model` gave; None when it cannot be
    read: the recipe's rate is kept)."""
    from transformers import AutoConfig

    try:
        return int(getattr(AutoConfig.from_pretrained(str(source)), "hidden_size", 0)) or None
    except (OSError, ValueError, TypeError):
        return None


def subsample(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))


def finetune_teacher(
    model: str | Path,
    task: Task,
    out_dir: str | Path,
    config: FinetuneConfig | None = None,
    progress: bool = True,
    force: bool = False,
    preset: str = "auto",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``task``; write an HF folder + ``dev_metrics.json`` + ``teacher_record.json``.

    Resumable: a killed run continues from ``.<out>.work/`` next to ``out_dir`` (locked while in use). The
    numbers, the out folder, the model and the data are all checked before anything is written. Without
    ``config``, ``preset`` is resolved for the task by :func:`teacher_config` (``auto``: by the train split's size
    and token lengths), then ``overrides`` (the CLI's options; None values keep the recipe's)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not force)):
        raise FileExistsError(str(out_dir))
    if config is not None:
        config.check()
    source = resolve_model(model)
    tokenizer = load_tokenizer(source)
    recipe: dict[str, Any] = {"preset": "explicit"}
    if config is None:
        config, recipe = teacher_config(task, model, preset, tokenizer, **(overrides or {}))
    train = encode(subsample(task.load_split("train"), config.max_train_samples, config.seed), task, tokenizer,
                   config.max_seq_len)  # fmt: skip
    dev = encode(task.load_split("dev"), task, tokenizer, config.max_seq_len)
    net = load_backbone_for_finetune(source, task)
    work = out_dir.with_name(f".{out_dir.name}.work")
    with FolderLock(work):
        t0 = time.time()
        result = _train(net, tokenizer, task, config, train, dev, work, source, progress)
        record, metrics_doc = _records(model, source, task, config, train, dev, result, time.time() - t0)
        record["recipe"] = recipe
        with atomic_directory(out_dir, force=True) as tmp:
            for item in (work / "best").iterdir():
                shutil.copy2(item, tmp / item.name)
            atomic_write_json(tmp / "teacher_record.json", record)
            atomic_write_json(tmp / "dev_metrics.json", metrics_doc)
        publishable(out_dir)
        shutil.rmtree(work, ignore_errors=True)
    metrics = {k: v for k, v in metrics_doc.items() if k in task.metric_names}
    weak = check_teacher_strength(task, metrics, metrics_doc["baseline"])
    return {
        "out_dir": str(out_dir),
        "metrics": metrics,
        "baseline": metrics_doc["baseline"],
        "record": record,
        "weak_teacher": weak.to_dict(),
        "recipe": recipe,
        "config": asdict(config),
    }


def check_teacher_strength(task: Task, metrics: dict[str, Any], baseline: dict[str, float]) -> WeakTeacher:
    """The weak-teacher check of ``task``'s main metric; a loud WARNING when the teacher is weak."""
    main = task.main_metric
    weak = weak_teacher(main, float(metrics[main]), float(baseline[main]))
    if weak.weak:
        log.warning("WARNING: weak teacher: %s", weak.message(task.name))
    return weak


def _train(net: Any, tokenizer: Any, task: Task, config: FinetuneConfig, train: Any, dev: Any, work: Path,
           source: str, progress: bool) -> Any:  # fmt: skip
    import torch

    from kdnas_deploy.distill.data import collate

    best_dir = work / "best"
    labels_t = torch.as_tensor(train.labels)

    def loss_fn(idx):
        out = net(**collate(train, idx), labels=labels_t[idx])
        return out.loss

    def evaluate():
        metrics = evaluate_logits(task, predict(net, dev), dev.labels)
        return metrics, metrics[task.main_metric]

    def on_best():
        publish_best(best_dir, net, tokenizer)

    loop_cfg = LoopConfig.of(config)
    return run_loop(
        config=loop_cfg,
        lengths=train.lengths,
        modules={"model": net},
        loss_fn=loss_fn,
        evaluate=evaluate,
        on_best=on_best,
        work_dir=work,
        progress=progress,
        desc=f"finetune {task.name}",
        signature={"model": source, "config": asdict(config), "task": task.name, "train": train.fingerprint},
    )


def _records(model: str | Path, source: str, task: Task, config: FinetuneConfig, train: Any, dev: Any,
             result: Any, wall: float) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    import torch

    state = result.state
    best = state.history[state.best_index]
    metrics = {k: v for k, v in best.items() if k in task.metric_names}
    baseline = task_baseline(task, dev.labels)
    record = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "kind": "teacher",
        "base_model": str(model),
        "base_model_path": source,
        "task": task.describe(),
        "config": asdict(config),
        "train_examples": len(train),
        "dev_examples": len(dev),
        "dev_baseline": baseline,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "train_seconds": round(state.train_seconds, 2),
        "wall_seconds_this_run": round(wall, 2),
        "torch_threads": torch.get_num_threads(),
    }
    metrics_doc = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "task": task.name,
        "split": "dev",
        "num_examples": len(dev),
        **metrics,
        "baseline": baseline,
    }
    return record, metrics_doc
