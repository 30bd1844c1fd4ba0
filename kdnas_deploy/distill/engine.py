"""The distillation engine: ``distill(teacher, arch, task, config=...) -> DistillResult``."""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.distill.cache import CachedTeacher, LiveTeacher, build_or_load_cache
from kdnas_deploy.distill.config import DistillConfig, student_layer_pairs
from kdnas_deploy.distill.data import augment_masked, collate, encode, evaluate_logits, predict, publishable
from kdnas_deploy.distill.init import importance_scores, init_from_teacher
from kdnas_deploy.distill.loop import LoopConfig, publish_best, run_loop
from kdnas_deploy.distill.objective import DistillLoss, projections_for
from kdnas_deploy.distill.teachers import load_classifier, load_tokenizer, resolve_model
from kdnas_deploy.errors import ConfigError, ModelError
from kdnas_deploy.io import FolderLock, atomic_directory, atomic_write_json, atomic_write_text
from kdnas_deploy.tasks.baselines import task_baseline

if TYPE_CHECKING:  # pragma: no cover
    import datasets

    from kdnas_deploy.tasks import Task

RECORD_SCHEMA_VERSION = 1
IMPORTANCE_SAMPLES = 256
MAX_EPOCHS, MAX_BATCH, MAX_SEQ_LEN = 1000, 1 << 20, 1 << 16  # beyond these a run never ends or cannot fit


@dataclass(frozen=True)
class DistillResult:
    metrics: dict[str, float]  # on `eval`, of the best epoch
    score: float  # task.main_metric of the best epoch
    final_loss: float  # mean distillation loss of the last epoch
    train_seconds: float  # wall time of the whole call (teacher cache included)
    model_dir: str | None
    history: tuple[dict[str, Any], ...] = ()
    cache_hit: bool | None = None  # None: teacher run live
    cache_bytes: int = 0
    loop_seconds: float = 0.0  # optimisation steps only
    baseline: dict[str, float] = field(default_factory=dict)  # the trivial baseline on `eval`
    eval_examples: int = 0


def _needed_teacher_layers(
    config: DistillConfig, pairs: list[tuple[int, int]], rel_layer: int
) -> tuple[int, ...]:
    layers: set[int] = set()
    if config.hidden_weight > 0:
        layers.update(t for _, t in pairs)
    if config.relation_weight > 0:
        layers.add(rel_layer - 1)  # the relation layer's input hidden state
    return tuple(sorted(layers))


def _train_encoding(train_ds: Any, task: Task, tokenizer: Any, config: DistillConfig, teacher_dir: str) -> Any:
    """The training examples as the student sees them: tokenised, plus masked copies under ``augment``."""
    enc = encode(train_ds, task, tokenizer, config.max_seq_len)
    if config.augment_copies:
        if tokenizer.mask_token_id is None:
            raise ModelError(f"the teacher's tokenizer ({teacher_dir}) has no mask token: augmentation needs one")
        enc = augment_masked(enc, config.augment_copies, config.augment_mask_rate, tokenizer.mask_token_id,
                             set(tokenizer.all_special_ids), config.seed)  # fmt: skip
    return enc


def _teacher_plan(
    config: DistillConfig, student_layers: int, teacher_layers: int
) -> tuple[list[tuple[int, int]], int, tuple[int, ...]]:
    """Hidden-state layer pairs, the relation layer and the teacher layers whose outputs a run needs."""
    pairs = (
        student_layer_pairs(student_layers, teacher_layers, config.layer_mapping) if config.hidden_weight > 0 else []
    )
    rel_layer = config.relation_layer if config.relation_layer > 0 else teacher_layers + 1 + config.relation_layer
    rel_layer = min(max(rel_layer, 1), teacher_layers)
    return pairs, rel_layer, _needed_teacher_layers(config, pairs, rel_layer)


def _cache_mb(enc: Any, teacher_hidden: int, layers: tuple[int, ...]) -> float:
    """Estimated size of a teacher-output cache (fp16 hidden states of the needed layers, unpadded)."""
    return int(enc.lengths.sum()) * teacher_hidden * 2 * len(layers) / 2**20


def prepare_teacher_cache(
    teacher: str | Path,
    task: Task,
    *,
    config: DistillConfig,
    train: datasets.Dataset,
    cache_dir: str | Path,
    progress: bool = False,
) -> bool:
    """Fill ``cache_dir`` with the teacher outputs that :func:`distill` with ``config`` on ``train`` reads, for
    any student, so that the first of many distillations does not pay for them (a search's preparation
    calls this; its workers then only read the cache). False, and nothing built, where the needed layers
    depend on the student's depth (hidden-state loss) or the cache would exceed ``cache_max_mb``."""
    if config.hidden_weight > 0:
        return False
    teacher_dir = resolve_model(teacher)
    t_model = load_classifier(teacher_dir, task)
    enc = _train_encoding(train, task, load_tokenizer(teacher_dir), config, teacher_dir)
    _, _, layers = _teacher_plan(config, 1, t_model.config.num_hidden_layers)
    if _cache_mb(enc, t_model.config.hidden_size, layers) > config.cache_max_mb:
        return False
    build_or_load_cache(t_model, teacher_dir, enc, config.max_seq_len, layers, cache_dir, config.eval_batch_size,
                        progress)  # fmt: skip
    return True


def _init_source(path: str, task: Task, t_model: Any) -> Any:
    """The model a student copies its weights from under ``init_from`` (e.g. a wider distilled student)."""
    model = load_classifier(path, task)
    if model.config.vocab_size != t_model.config.vocab_size:
        raise ModelError(
            f"--init-from {path}: vocabulary of {model.config.vocab_size} tokens, but the teacher's tokenizer has"
            f" {t_model.config.vocab_size}: it must share the teacher's vocabulary"
        )
    return model


def check_numbers(config: DistillConfig) -> None:
    """Refuse numbers no run can use (a typed error before anything is loaded or written)."""
    checks = {
        "epochs": 0 < config.epochs <= MAX_EPOCHS,
        "batch_size": 1 <= config.batch_size <= MAX_BATCH,
        "eval_batch_size": 1 <= config.eval_batch_size <= MAX_BATCH,
        "learning_rate": 0 < config.learning_rate <= 1e3,
        "max_seq_len": 2 <= config.max_seq_len <= MAX_SEQ_LEN,
        "temperature": config.temperature > 0,
        "warmup_ratio": 0 <= config.warmup_ratio < 1,
        "weight_decay": config.weight_decay >= 0,
        "checkpoint_every": config.checkpoint_every >= 0,
        "eval_every": config.eval_every >= 0,
        "ema_decay": 0 <= config.ema_decay < 1,
        "augment_copies": 0 <= config.augment_copies <= 100,
    }
    for name, ok in checks.items():
        value = getattr(config, name)
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(f"distill: {name} = {value!r} is out of range")
    for name, w in config.loss_weights().items():
        if not (math.isfinite(w) and w >= 0):
            raise ConfigError(f"distill: {name}_weight = {w!r} must be a finite number >= 0")


def check_out_dir(out_dir: str | Path | None, force: bool) -> Path | None:
    """``out_dir`` as a Path; refused (before anything is written) when it is a file, or a non-empty folder
    without ``force``."""
    if out_dir is None:
        return None
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(str(out_dir))
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(str(out_dir))
    return out_dir


def _new_student(arch: Architecture, task: Task, config: DistillConfig, t_model: Any) -> Any:
    import torch

    from kdnas_deploy.student import build_student

    torch.manual_seed(config.seed)
    student = build_student(
        arch,
        num_labels=task.num_labels,
        seed=config.seed,
        problem_type="regression" if task.is_regression else "single_label_classification",
        vocab_size=t_model.config.vocab_size,
        type_vocab_size=getattr(t_model.config, "type_vocab_size", 2),
        pad_token_id=getattr(t_model.config, "pad_token_id", 0),
    )
    if t_model.config.id2label:
        student.config.id2label = dict(t_model.config.id2label)
        student.config.label2id = dict(t_model.config.label2id)
    return student


def _init_student(student: Any, arch: Architecture, task: Task, config: DistillConfig, t_model: Any,
                  train_enc: Any) -> dict[str, Any]:  # fmt: skip
    """Copy the teacher's (or ``init_from``'s) most important weights into ``student`` under ``init``."""
    init_info: dict[str, Any] = {"init": config.init}
    if config.init != "teacher":
        return init_info
    init_dir = None if config.init_from is None else resolve_model(config.init_from)
    source_model = t_model if init_dir is None else _init_source(init_dir, task, t_model)
    sample = np.arange(min(IMPORTANCE_SAMPLES, len(train_enc)))
    batches = [collate(train_enc, sample[i : i + 64]) for i in range(0, len(sample), 64)]
    scores = importance_scores(source_model, batches)
    init_info.update(init_from_teacher(student, source_model, arch, config.layer_mapping, scores))
    if init_dir is not None:
        init_info["init_from"] = init_dir
    return init_info


@dataclass
class _Prepared:
    """Everything a distillation needs, loaded and checked before anything is written."""

    teacher_dir: str
    t_model: Any
    tokenizer: Any
    train_enc: Any
    eval_enc: Any


def _prepare(teacher: str | Path, task: Task, config: DistillConfig, train: Any, eval_ds: Any) -> _Prepared:
    teacher_dir = resolve_model(teacher)
    t_model = load_classifier(teacher_dir, task)
    for p in t_model.parameters():
        p.requires_grad_(False)
    tokenizer = load_tokenizer(teacher_dir)
    train_ds = train if train is not None else task.load_split("train")
    eval_ds = eval_ds if eval_ds is not None else task.load_split("dev")
    train_enc = _train_encoding(train_ds, task, tokenizer, config, teacher_dir)
    if len(train_enc) == 0:
        from kdnas_deploy.errors import DataError

        raise DataError(f"task {task.name!r}: the training split is empty")
    return _Prepared(teacher_dir, t_model, tokenizer, train_enc, encode(eval_ds, task, tokenizer, config.max_seq_len))


def _loop_config(config: DistillConfig, persistent: bool) -> LoopConfig:
    return LoopConfig.of(config, checkpoint_every=config.checkpoint_every if persistent else 0)


def distill(
    teacher: str | Path,
    arch: Architecture,
    task: Task,
    *,
    config: DistillConfig,
    train: datasets.Dataset | None = None,
    eval: datasets.Dataset | None = None,  # noqa: A002 - the contract's name
    out_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    force: bool = False,
) -> DistillResult:
    """Distill a student of shape ``arch`` from ``teacher`` on ``task`` (see :class:`DistillConfig`).

    ``out_dir`` None: nothing is saved (proxy runs). With ``out_dir`` the run resumes from
    ``.<out>.work/`` after a kill (locked while in use), and the best epoch's student is published as an HF
    folder. Everything that can be checked (numbers, out folder, teacher, data) is checked before a write."""
    t_start = time.time()
    check_numbers(config)
    out_dir = check_out_dir(out_dir, force)
    prep = _prepare(teacher, task, config, train, eval)
    student = _new_student(arch, task, config, prep.t_model)
    init_info = _init_student(student, arch, task, config, prep.t_model, prep.train_enc)
    t_hidden = prep.t_model.config.hidden_size
    pairs, rel_layer, layers = _teacher_plan(config, arch.num_layers, prep.t_model.config.num_hidden_layers)
    cache_mb = _cache_mb(prep.train_enc, t_hidden, layers)
    lock = FolderLock(out_dir.with_name(f".{out_dir.name}.work")).acquire() if out_dir is not None else None
    try:
        if cache_dir is not None and cache_mb <= config.cache_max_mb:
            source: Any = build_or_load_cache(prep.t_model, prep.teacher_dir, prep.train_enc, config.max_seq_len,
                                              layers, cache_dir, config.eval_batch_size, progress)  # fmt: skip
        else:
            source = LiveTeacher(prep.t_model, layers)
        projections = projections_for(arch, t_hidden, pairs)
        loss = DistillLoss(student=student, projections=projections, source=source, train_enc=prep.train_enc,
                           task=task, config=config, pairs=pairs, rel_layer=rel_layer,
                           t_model=prep.t_model)  # fmt: skip
        result, work = _train(student, projections, loss, task, config, prep, arch, out_dir, progress)
        state = result.state
        best = state.history[state.best_index]
        metrics = {k: float(v) for k, v in best.items() if k in task.metric_names}
        baseline = task_baseline(task, prep.eval_enc.labels)
        wall = time.time() - t_start
        model_dir = None
        if out_dir is not None:
            cache_info = {"hit": getattr(source, "hit", None), "bytes": source.size_bytes,
                          "estimated_mb": round(cache_mb, 1), "used": isinstance(source, CachedTeacher)}  # fmt: skip
            record = _record(teacher, prep, arch, task, config, init_info, layers, metrics, result, wall,
                             cache_info if cache_dir else None)  # fmt: skip
            record["baseline"] = baseline
            _publish(out_dir, work, prep.tokenizer, arch, record)
            model_dir = str(out_dir)
    finally:
        if lock is not None:
            lock.release()
    return DistillResult(
        metrics=metrics,
        score=float(metrics[task.main_metric]),
        final_loss=float(state.last_epoch_loss),
        train_seconds=round(wall, 3),
        model_dir=model_dir,
        history=tuple(state.history),
        cache_hit=source.hit if isinstance(source, CachedTeacher) else None,
        cache_bytes=int(source.size_bytes),
        loop_seconds=round(state.train_seconds, 3),
        baseline=baseline,
        eval_examples=len(prep.eval_enc),
    )


def _train(student: Any, projections: Any, loss: DistillLoss, task: Task, config: DistillConfig,
           prep: _Prepared, arch: Architecture, out_dir: Path | None, progress: bool) -> tuple[Any, Path]:  # fmt: skip
    """Run the resumable loop; the best epoch's student is kept in ``<work>/best`` for persistent runs."""
    persistent = out_dir is not None
    work = out_dir.with_name(f".{out_dir.name}.work") if out_dir is not None else Path(
        tempfile.mkdtemp(prefix="kdnas-distill-"))  # fmt: skip
    best_dir = work / "best"
    eval_enc = prep.eval_enc

    def evaluate() -> tuple[dict[str, float], float]:
        metrics = evaluate_logits(task, predict(student, eval_enc, config.eval_batch_size), eval_enc.labels)
        return metrics, metrics[task.main_metric]

    def on_best() -> None:
        if persistent:
            publish_best(best_dir, student)

    try:
        result = run_loop(
            config=_loop_config(config, persistent),
            lengths=prep.train_enc.lengths,
            modules={"student": student, "projections": projections},
            loss_fn=loss,
            evaluate=evaluate,
            on_best=on_best,
            work_dir=work,
            progress=progress,
            desc=f"distill {arch.short()}",
            signature={
                "teacher": prep.teacher_dir,
                "arch": arch.to_dict(),
                "config": config.to_dict(),
                "train": prep.train_enc.fingerprint,
            },
        )
    finally:
        loss.close()
        if not persistent:
            shutil.rmtree(work, ignore_errors=True)
    return result, work


def _record(teacher: str | Path, prep: _Prepared, arch: Architecture, task: Task, config: DistillConfig,
            init_info: dict[str, Any], layers: tuple[int, ...], metrics: dict[str, float], result: Any,
            wall: float, cache: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    state = result.state
    return {
        "schema_version": RECORD_SCHEMA_VERSION,
        "kind": "student",
        "teacher": str(teacher),
        "teacher_path": prep.teacher_dir,
        "architecture": arch.to_dict(),
        "task": task.describe(),
        "config": config.to_dict(),
        "data": {
            "train_examples": len(prep.train_enc),
            "train_fingerprint": prep.train_enc.fingerprint,
            "eval_examples": len(prep.eval_enc),
            "eval_fingerprint": prep.eval_enc.fingerprint,
        },
        "init": init_info,
        "teacher_layers_used": list(layers),
        "metrics": metrics,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "final_loss": state.last_epoch_loss,
        "train_seconds": round(state.train_seconds, 2),
        "wall_seconds_this_run": round(wall, 2),
        "resumed_from_step": result.resumed_from_step,
        "cache": cache,
    }


def _publish(out_dir: Path, work: Path, tokenizer: Any, arch: Architecture, record: dict[str, Any]) -> None:
    """Move the best student, its tokenizer, architecture and record into ``out_dir`` (atomically)."""
    best_dir = work / "best"
    with atomic_directory(out_dir, force=True) as tmp:
        for item in best_dir.iterdir():
            shutil.copy2(item, tmp / item.name)
        tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / "architecture.json", arch.to_json() + "\n")
        atomic_write_json(tmp / "distill_record.json", record)
    publishable(out_dir)
    shutil.rmtree(work, ignore_errors=True)
