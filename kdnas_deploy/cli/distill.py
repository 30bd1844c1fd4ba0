"""CLI of the distill stage: ``teacher finetune``, ``distill``, ``evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import click

TASK_HELP = (
    "GLUE name (sst2, mrpc, cola, stsb, qnli, rte, mnli, qqp, wnli), 'builtin', or a CSV/TSV/JSON file."
)


def _task_options(f):
    f = click.option("--label-column", default=None, help="Label column of a CSV/TSV/JSON task.")(f)
    f = click.option(
        "--text-column",
        "text_columns",
        default=None,
        help="Text column(s) of a CSV/TSV/JSON task, comma-separated (one or two).",
    )(f)
    f = click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Folder in the original GLUE layout (DIR/SST-2/train.tsv); default $KDNAS_GLUE_DIR.",
    )(f)
    f = click.option("--task", "task_name", required=True, help=TASK_HELP)(f)
    return f


def _make_task(task_name: str, data_dir: Path | None, text_columns: str | None, label_column: str | None):
    from kdnas_deploy.tasks import get_task

    kwargs = {}
    if text_columns:
        kwargs["text_columns"] = text_columns
    if label_column:
        kwargs["label_column"] = label_column
    return get_task(task_name, data_dir, **kwargs)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


@click.group()
def teacher() -> None:
    """Fine-tune a pretrained encoder into a task teacher."""


@teacher.command("finetune")
@click.option(
    "--model",
    default="minilm-l6",
    show_default=True,
    help="Pretrained encoder: 'minilm-l6' (offline all-MiniLM-L6-v2), a local HF folder or a hub id.",
)
@_task_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output HF folder.")
@click.option(
    "--preset",
    type=click.Choice(["default", "fast"]),
    default="default",
    show_default=True,
    help="default: 3 epochs, len 128, lr 5e-5; fast: 1 epoch, len 64, lr 1e-4.",
)
@click.option("--epochs", type=float, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--learning-rate", "--lr", "learning_rate", type=float, default=None)
@click.option("--max-seq-len", type=int, default=None)
@click.option(
    "--max-train-samples", type=int, default=None, help="Use a seeded random subset of the train split."
)
@click.option("--seed", type=int, default=None)
@click.option("--threads", type=int, default=None, help="torch intra-op threads.")
@click.option("--force", is_flag=True, help="Replace an existing --out folder.")
@click.option("--no-progress", is_flag=True)
def finetune(
    model,
    task_name,
    data_dir,
    text_columns,
    label_column,
    out_dir,
    preset,
    epochs,
    batch_size,
    learning_rate,
    max_seq_len,
    max_train_samples,
    seed,
    threads,
    force,
    no_progress,
) -> None:
    """Fine-tune MODEL on TASK into a sequence-classification teacher (resumable)."""
    from kdnas_deploy.distill.finetune import FINETUNE_PRESETS, finetune_teacher

    _threads(threads)
    task = _make_task(task_name, data_dir, text_columns, label_column)
    config = FINETUNE_PRESETS[preset]().with_overrides(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_seq_len=max_seq_len,
        max_train_samples=max_train_samples,
        seed=seed,
    )
    result = finetune_teacher(model, task, out_dir, config, progress=not no_progress, force=force)
    click.echo(json.dumps({"out_dir": result["out_dir"], **result["metrics"]}))


@click.command()
@click.option(
    "--teacher", "teacher_dir", required=True, help="Teacher: an HF sequence-classification folder or hub id."
)
@click.option(
    "--arch",
    "arch_spec",
    required=True,
    help="Student architecture: ARCH.json, inline JSON or L=3,H=384,A=12,F=1536.",
)
@_task_options
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output student folder."
)
@click.option("--preset", type=click.Choice(["full", "proxy"]), default="full", show_default=True)
@click.option("--epochs", type=float, default=None)
@click.option("--max-train-samples", type=int, default=None, help="Seeded random subset of the train split.")
@click.option("--init", "init", type=click.Choice(["teacher", "random"]), default=None)
@click.option(
    "--init-from",
    "init_from",
    type=click.Path(path_type=Path),
    default=None,
    help="Copy the student's initial weights from this BERT classifier instead of the teacher (e.g. a wider"
    " student distilled before: progressive shrinking). Same vocabulary and labels as the teacher.",
)
@click.option("--batch-size", type=int, default=None)
@click.option("--learning-rate", "--lr", "learning_rate", type=float, default=None)
@click.option("--max-seq-len", type=int, default=None)
@click.option("--temperature", type=float, default=None)
@click.option("--layer-mapping", type=click.Choice(["uniform", "last", "uniform+last"]), default=None)
@click.option("--kd-weight", type=float, default=None)
@click.option("--hard-weight", type=float, default=None)
@click.option("--hidden-weight", type=float, default=None)
@click.option("--relation-weight", type=float, default=None)
@click.option("--seed", type=int, default=None)
@click.option(
    "--augment",
    "augment_copies",
    type=int,
    default=None,
    help="Add N copies of every training example with 15% of its tokens masked; the teacher labels them.",
)
@click.option(
    "--eval-every",
    type=int,
    default=None,
    help="Also evaluate on the dev split every N training steps (default: at epoch ends only); the best"
    " evaluation's student is kept.",
)
@click.option(
    "--ema-decay",
    type=float,
    default=None,
    help="Evaluate and keep an exponential moving average of the student's weights (e.g. 0.999; default off).",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Cache teacher outputs here (reused by later runs on the same data).",
)
@click.option("--threads", type=int, default=None, help="torch intra-op threads.")
@click.option("--force", is_flag=True, help="Replace an existing --out folder.")
@click.option("--no-progress", is_flag=True)
def distill(
    teacher_dir,
    arch_spec,
    task_name,
    data_dir,
    text_columns,
    label_column,
    out_dir,
    preset,
    epochs,
    max_train_samples,
    init,
    init_from,
    batch_size,
    learning_rate,
    max_seq_len,
    temperature,
    layer_mapping,
    kd_weight,
    hard_weight,
    hidden_weight,
    relation_weight,
    seed,
    augment_copies,
    eval_every,
    ema_decay,
    cache_dir,
    threads,
    force,
    no_progress,
) -> None:
    """Distill a student of shape --arch from --teacher on --task (resumable after a kill)."""
    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.distill.config import DISTILL_PRESETS
    from kdnas_deploy.distill.engine import distill as run_distill
    from kdnas_deploy.distill.finetune import subsample

    _threads(threads)
    arch = Architecture.parse(arch_spec)
    task = _make_task(task_name, data_dir, text_columns, label_column)
    config = DISTILL_PRESETS[preset]().with_overrides(
        epochs=epochs,
        init=init,
        init_from=str(init_from) if init_from else None,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_seq_len=max_seq_len,
        temperature=temperature,
        layer_mapping=layer_mapping,
        kd_weight=kd_weight,
        hard_weight=hard_weight,
        hidden_weight=hidden_weight,
        relation_weight=relation_weight,
        seed=seed,
        augment_copies=augment_copies,
        eval_every=eval_every,
        ema_decay=ema_decay,
    )
    train = subsample(task.load_split("train"), max_train_samples, config.seed) if max_train_samples else None
    result = run_distill(
        teacher_dir,
        arch,
        task,
        config=config,
        train=train,
        out_dir=out_dir,
        cache_dir=cache_dir,
        progress=not no_progress,
        force=force,
    )
    click.echo(
        json.dumps(
            {
                "out_dir": result.model_dir,
                **result.metrics,
                "final_loss": result.final_loss,
                "train_seconds": result.train_seconds,
            }
        )
    )


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@_task_options
@click.option("--split", default="dev", show_default=True, help="train or dev (alias validation).")
@click.option("--max-seq-len", type=int, default=None, help="Default: the model's recorded value, else 128.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write metrics here."
)
@click.option("--threads", type=int, default=None)
@click.option("--no-progress", is_flag=True)
def evaluate(
    model_dir,
    task_name,
    data_dir,
    text_columns,
    label_column,
    split,
    max_seq_len,
    batch_size,
    json_path,
    threads,
    no_progress,
) -> None:
    """Evaluate MODEL_DIR on --task; print (and optionally write) its GLUE metrics."""
    from kdnas_deploy.distill.evaluate import evaluate_model

    _threads(threads)
    task = _make_task(task_name, data_dir, text_columns, label_column)
    doc = evaluate_model(model_dir, task, split, max_seq_len, batch_size, json_path, progress=not no_progress)
    click.echo(json.dumps(doc))
