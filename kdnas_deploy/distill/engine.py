"""The distillation engine: ``distill(teacher, arch, task, config=...) -> DistillResult``."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.distill.cache import CachedTeacher, LiveTeacher, build_or_load_cache
from kdnas_deploy.distill.config import DistillConfig, student_layer_pairs
from kdnas_deploy.distill.data import augment_masked, collate, encode, evaluate_logits, predict, publishable
from kdnas_deploy.distill.init import importance_scores, init_from_teacher
from kdnas_deploy.distill.loop import LoopConfig, publish_best, run_loop
from kdnas_deploy.distill.losses import LOSSES, LossInputs
from kdnas_deploy.distill.teachers import load_classifier, load_tokenizer, resolve_model
from kdnas_deploy.errors import ModelError
from kdnas_deploy.io import atomic_directory, atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    import datasets

    from kdnas_deploy.tasks import Task

RECORD_SCHEMA_VERSION = 1
IMPORTANCE_SAMPLES = 256


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


class _Capture:
    """Forward hooks storing the query/key/value projections of one attention layer."""

    def __init__(self, attention_self: Any):
        self.out: dict[str, Any] = {}
        self.handles = [
            getattr(attention_self, name).register_forward_hook(self._hook(name[0]))
            for name in ("query", "key", "value")
        ]

    def _hook(self, key: str):
        def hook(_module, _inputs, output):
            self.out[key] = output

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


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
    ``.<out>.work/`` after a kill, and the best epoch's student is published as an HF folder."""
    import torch

    from kdnas_deploy.student import build_student

    t_start = time.time()
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and any(out_dir.iterdir()) and not force:
            raise FileExistsError(str(out_dir))
    teacher_dir = resolve_model(teacher)
    t_model = load_classifier(teacher_dir, task)
    for p in t_model.parameters():
        p.requires_grad_(False)
    tokenizer = load_tokenizer(teacher_dir)
    train_ds = train if train is not None else task.load_split("train")
    eval_ds = eval if eval is not None else task.load_split("dev")
    train_enc = _train_encoding(train_ds, task, tokenizer, config, teacher_dir)
    eval_enc = encode(eval_ds, task, tokenizer, config.max_seq_len)

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
    init_info: dict[str, Any] = {"init": config.init}
    if config.init == "teacher":
        init_dir = None if config.init_from is None else resolve_model(config.init_from)
        source_model = t_model if init_dir is None else _init_source(init_dir, task, t_model)
        sample = np.arange(min(IMPORTANCE_SAMPLES, len(train_enc)))
        batches = [collate(train_enc, sample[i : i + 64]) for i in range(0, len(sample), 64)]
        scores = importance_scores(source_model, batches)
        init_info.update(init_from_teacher(student, source_model, arch, config.layer_mapping, scores))
        if init_dir is not None:
            init_info["init_from"] = init_dir
        del source_model

    t_hidden = t_model.config.hidden_size
    pairs, rel_layer, layers = _teacher_plan(config, arch.num_layers, t_model.config.num_hidden_layers)
    cache_mb = _cache_mb(train_enc, t_hidden, layers)
    if cache_dir is not None and cache_mb <= config.cache_max_mb:
        source: Any = build_or_load_cache(
            t_model,
            teacher_dir,
            train_enc,
            config.max_seq_len,
            layers,
            cache_dir,
            config.eval_batch_size,
            progress,
        )
    else:
        source = LiveTeacher(t_model, layers)

    projections = torch.nn.ModuleList([torch.nn.Linear(arch.hidden_size, t_hidden) for _ in pairs])
    if arch.hidden_size == t_hidden:
        with torch.no_grad():
            for proj in projections:
                proj.weight.copy_(torch.eye(t_hidden))
                proj.bias.zero_()
    t_attn = t_model.bert.encoder.layer[rel_layer - 1].attention.self if config.relation_weight > 0 else None
    capture = _Capture(student.bert.encoder.layer[-1].attention.self) if t_attn is not None else None
    labels_t = torch.as_tensor(train_enc.labels)
    weights = {k: w for k, w in config.loss_weights().items() if w > 0}
    part_sums = dict.fromkeys(weights, 0.0)

    def loss_fn(idx: np.ndarray) -> torch.Tensor:
        inputs = collate(train_enc, idx)
        tb = source.batch(train_enc, idx, inputs)
        out = student(**inputs, output_hidden_states=bool(pairs))
        hidden_pairs = [
            (proj(out.hidden_states[s]), tb.hidden[t])
            for proj, (s, t) in zip(projections, pairs, strict=True)
        ]
        relations = {}
        if t_attn is not None and capture is not None:
            with torch.no_grad():
                h_in = tb.hidden[rel_layer - 1]
                t_qkv = {"q": t_attn.query(h_in), "k": t_attn.key(h_in), "v": t_attn.value(h_in)}
            relations = {k: (capture.out[k], t_qkv[k]) for k in ("q", "k", "v")}
        x = LossInputs(
            out.logits,
            tb.logits,
            labels_t[idx],
            inputs["attention_mask"],
            task.is_regression,
            config.temperature,
            hidden_pairs,
            relations,
            config.relation_heads,
        )
        total = torch.zeros(())
        for name, w in weights.items():
            value = LOSSES[name](x)
            part_sums[name] += float(value.detach())
            total = total + w * value
        return total

    def evaluate() -> tuple[dict[str, float], float]:
        metrics = evaluate_logits(task, predict(student, eval_enc, config.eval_batch_size), eval_enc.labels)
        return metrics, metrics[task.main_metric]

    persistent = out_dir is not None
    work = (
        out_dir.with_name(f".{out_dir.name}.work")
        if out_dir is not None
        else Path(tempfile.mkdtemp(prefix="kdnas-distill-"))
    )
    best_dir = work / "best"

    def on_best() -> None:
        if persistent:
            publish_best(best_dir, student)

    loop_cfg = LoopConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        warmup_ratio=config.warmup_ratio,
        weight_decay=config.weight_decay,
        checkpoint_every=config.checkpoint_every if persistent else 0,
        eval_every=config.eval_every,
        ema_decay=config.ema_decay,
    )
    try:
        result = run_loop(
            config=loop_cfg,
            lengths=train_enc.lengths,
            modules={"student": student, "projections": projections},
            loss_fn=loss_fn,
            evaluate=evaluate,
            on_best=on_best,
            work_dir=work,
            progress=progress,
            desc=f"distill {arch.short()}",
            signature={
                "teacher": teacher_dir,
                "arch": arch.to_dict(),
                "config": config.to_dict(),
                "train": train_enc.fingerprint,
            },
        )
    finally:
        if capture is not None:
            capture.remove()
        if not persistent:
            shutil.rmtree(work, ignore_errors=True)
    state = result.state
    best = state.history[state.best_index]
    metrics = {k: float(v) for k, v in best.items() if k in task.metric_names}
    wall = time.time() - t_start
    model_dir = None
    if out_dir is not None:
        record = {
            "schema_version": RECORD_SCHEMA_VERSION,
            "kind": "student",
            "teacher": str(teacher),
            "teacher_path": teacher_dir,
            "architecture": arch.to_dict(),
            "task": task.describe(),
            "config": config.to_dict(),
            "data": {
                "train_examples": len(train_enc),
                "train_fingerprint": train_enc.fingerprint,
                "eval_examples": len(eval_enc),
                "eval_fingerprint": eval_enc.fingerprint,
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
            "cache": {
                "hit": getattr(source, "hit", None),
                "bytes": source.size_bytes,
                "estimated_mb": round(cache_mb, 1),
                "used": isinstance(source, CachedTeacher),
            }
            if cache_dir
            else None,
        }
        with atomic_directory(out_dir, force=True) as tmp:
            for item in best_dir.iterdir():
                shutil.copy2(item, tmp / item.name)
            tokenizer.save_pretrained(tmp)
            atomic_write_text(tmp / "architecture.json", arch.to_json() + "\n")
            atomic_write_json(tmp / "distill_record.json", record)
        publishable(out_dir)
        shutil.rmtree(work, ignore_errors=True)
        model_dir = str(out_dir)
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
    )
