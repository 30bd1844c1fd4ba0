"""``kdnas-deploy teacher finetune``, ``distill``, ``evaluate``: thin commands over :mod:`kdnas_deploy.distill`.

Each command builds the library's config object (``FinetuneConfig``, ``DistillConfig``) from a preset and the
options given, then calls the library. Every number is typed and ranged by :mod:`kdnas_deploy.cli.options`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kdnas_deploy.cli import options as o

F = TypeVar("F", bound=Callable[..., Any])

SEQ_LEN = click.IntRange(8, 512)  # DistillConfig's floor; BERT's 512 positions
EMA_DECAY = o.FiniteFloat(min=0.0, max=1.0, max_open=True)  # [0, 1)


def task_options(f: F) -> F:
    """``--task``, ``--data-dir`` and the column options of a CSV/TSV/JSON task."""
    decorators = [
        o.task_option(),
        o.data_dir_option(),
        click.option(
            "--text-column",
            "text_columns",
            default=None,
            help="Text column(s) of a CSV/TSV/JSON task, comma-separated (one or two).",
        ),
        click.option("--label-column", default=None, help="Label column of a CSV/TSV/JSON task."),
    ]
    for deco in reversed(decorators):
        f = deco(f)
    return f


def make_task(task_name: str, data_dir: Path | None, text_columns: str | None, label_column: str | None) -> Any:
    from kdnas_deploy.tasks import get_task

    kwargs = {}
    if text_columns:
        kwargs["text_columns"] = text_columns
    if label_column:
        kwargs["label_column"] = label_column
    return get_task(task_name, data_dir, **kwargs)


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _print_json(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc))


# ---------------------------------------------------------------------------------------------- teacher
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
@task_options
@o.out_option(kind="dir", dest="out_dir", help="Output HF folder.")
@click.option(
    "--preset",
    type=click.Choice(["auto", "default", "fast", "glue-tiny", "glue-small", "glue-medium", "glue-large"]),
    default="auto",
    show_default=True,
    help="auto: the glue-* tier of the train split's size (tiny < 1k, small < 20k, medium < 200k rows; more "
    "optimizer steps and a lower lr for small sets), length from the p99 of its token lengths; default: 3 epochs, "
    "len 128, lr 5e-5; fast: 1 epoch, len 64, lr 1e-4.",
)
@click.option("--epochs", type=o.Epochs, default=None, help="Training epochs (> 0; fractions allowed).")
@click.option("--batch-size", type=o.Batch, default=None, help="Training batch size.")
@click.option(
    "--learning-rate",
    "--lr",
    "learning_rate",
    type=o.PositiveFloat,
    default=None,
    help="Peak learning rate (linear warm-up and decay).",
)
@click.option("--max-seq-len", type=SEQ_LEN, default=None, help="Token length inputs are cut/padded to (8-512).")
@click.option(
    "--max-train-samples", type=o.Count, default=None, help="Use a seeded random subset of the train split."
)
@click.option("--seed", type=o.Seed, default=None, help="Seed of the subset, initialisation and order.")
@o.threads_option()
@o.force_option("Replace an existing --out folder.")
@o.no_progress_option()
def finetune(
    model: str,
    task_name: str,
    data_dir: Path | None,
    text_columns: str | None,
    label_column: str | None,
    out_dir: Path,
    preset: str,
    threads: int,
    force: bool,
    no_progress: bool,
    **recipe: Any,
) -> None:
    """Fine-tune MODEL on TASK into a sequence-classification teacher (resumable)."""
    from kdnas_deploy.distill.finetune import finetune_teacher

    set_threads(threads)
    task = make_task(task_name, data_dir, text_columns, label_column)
    result = finetune_teacher(model, task, out_dir, None, progress=not no_progress, force=force, preset=preset,
                              overrides=recipe)
    _print_json({"out_dir": result["out_dir"], **result["metrics"], "baseline": result["baseline"],
                 "weak_teacher": result["weak_teacher"]["weak"], "recipe": result["recipe"]["recipe"]})


# ---------------------------------------------------------------------------------------------- distill
LOSS_HELP = "Weight of the {} loss (>= 0; 0 switches it off) [default: the preset's]."


@click.command()
@click.option(
    "--teacher", "teacher_dir", required=True, help="Teacher: an HF sequence-classification folder or hub id."
)
@click.option(
    "--arch", type=o.ARCH, required=True, help="Student architecture: ARCH.json, inline JSON or L=3,H=384,A=12,F=1536."
)
@task_options
@o.out_option(kind="dir", dest="out_dir", help="Output student folder.")
@click.option(
    "--preset",
    type=click.Choice(["full", "proxy"]),
    default="full",
    show_default=True,
    help="full: every loss, 3 epochs; proxy: 1 epoch, length 64, logits + last-layer relations.",
)
@click.option("--epochs", type=o.Epochs, default=None, help="Training epochs (> 0; fractions allowed).")
@click.option("--max-train-samples", type=o.Count, default=None, help="Seeded random subset of the train split.")
@click.option(
    "--init",
    type=click.Choice(["teacher", "random"]),
    default=None,
    help="Initial student weights: sliced from the teacher, or random [default: teacher].",
)
@click.option(
    "--init-from",
    type=o.ExistingPath(file_okay=False),
    default=None,
    help="Copy the student's initial weights from this BERT classifier instead of the teacher (e.g. a "
    "wider student distilled before: progressive shrinking). Same vocabulary and labels as the "
    "teacher.",
)
@click.option("--batch-size", type=o.Batch, default=None, help="Training batch size [default: 32].")
@click.option(
    "--learning-rate",
    "--lr",
    "learning_rate",
    type=o.PositiveFloat,
    default=None,
    help="Peak learning rate [default: 1e-4].",
)
@click.option("--max-seq-len", type=SEQ_LEN, default=None, help="Token length (8-512) [default: the preset's].")
@click.option("--temperature", type=o.PositiveFloat, default=None, help="Softmax temperature of the KD loss [2].")
@click.option(
    "--layer-mapping",
    type=click.Choice(["uniform", "last", "uniform+last"]),
    default=None,
    help="Teacher layers matched to student layers for the hidden-state loss [uniform+last].",
)
@click.option("--kd-weight", type=o.NonNegativeFloat, default=None, help=LOSS_HELP.format("soft-label (logit KD)"))
@click.option("--hard-weight", type=o.NonNegativeFloat, default=None, help=LOSS_HELP.format("gold-label"))
@click.option("--hidden-weight", type=o.NonNegativeFloat, default=None, help=LOSS_HELP.format("hidden-state MSE"))
@click.option(
    "--relation-weight",
    type=o.NonNegativeFloat,
    default=None,
    help=LOSS_HELP.format("self-attention relation (MiniLMv2)"),
)
@click.option("--seed", type=o.Seed, default=None, help="Seed of initialisation, order and subset [42].")
@click.option(
    "--augment",
    "augment_copies",
    type=o.NonNegativeInt,
    default=None,
    help="Add N copies of every training example with 15% of its tokens masked; the teacher labels them.",
)
@click.option(
    "--eval-every",
    type=o.NonNegativeInt,
    default=None,
    help="Also evaluate on the dev split every N training steps (default: at epoch ends only); the best"
    " evaluation's student is kept.",
)
@click.option(
    "--ema-decay",
    type=EMA_DECAY,
    default=None,
    help="Evaluate and keep an exponential moving average of the student's weights, in [0, 1) (e.g. "
    "0.999; default 0: off).",
)
@click.option(
    "--cache-dir",
    type=o.OUT_DIR,
    default=None,
    help="Cache teacher outputs here (reused by later runs on the same data).",
)
@o.threads_option()
@o.force_option("Replace an existing --out folder.")
@o.no_progress_option()
def distill(
    teacher_dir: str,
    arch: Any,
    task_name: str,
    data_dir: Path | None,
    text_columns: str | None,
    label_column: str | None,
    out_dir: Path,
    preset: str,
    max_train_samples: int | None,
    cache_dir: Path | None,
    threads: int,
    force: bool,
    no_progress: bool,
    **recipe: Any,
) -> None:
    """Distill a student of shape --arch from --teacher on --task (resumable after a kill)."""
    from kdnas_deploy.distill.config import DISTILL_PRESETS
    from kdnas_deploy.distill.engine import distill as run_distill
    from kdnas_deploy.distill.finetune import subsample

    set_threads(threads)
    task = make_task(task_name, data_dir, text_columns, label_column)
    if recipe.get("init_from") is not None:
        recipe["init_from"] = str(recipe["init_from"])
    config = DISTILL_PRESETS[preset]().with_overrides(**recipe)
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
    _print_json(
        {
            "out_dir": result.model_dir,
            **result.metrics,
            "baseline": result.baseline,
            "final_loss": result.final_loss,
            "train_seconds": result.train_seconds,
        }
    )


# ---------------------------------------------------------------------------------------------- evaluate
@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@task_options
@click.option("--split", default="dev", show_default=True, help="train or dev (alias validation).")
@click.option("--max-seq-len", type=SEQ_LEN, default=None, help="Default: the model's recorded value, else 128.")
@click.option("--batch-size", type=o.Batch, default=128, show_default=True, help="Evaluation batch size.")
@o.json_option(help="Also write the metrics as JSON to this file.")
@o.threads_option()
@o.no_progress_option()
def evaluate(
    model_dir: Path,
    task_name: str,
    data_dir: Path | None,
    text_columns: str | None,
    label_column: str | None,
    split: str,
    max_seq_len: int | None,
    batch_size: int,
    json_path: Path | None,
    threads: int,
    no_progress: bool,
) -> None:
    """Evaluate MODEL_DIR on --task; print (and optionally write) its GLUE metrics."""
    from kdnas_deploy.distill.evaluate import evaluate_model

    set_threads(threads)
    task = make_task(task_name, data_dir, text_columns, label_column)
    doc = evaluate_model(model_dir, task, split, max_seq_len, batch_size, json_path, progress=not no_progress)
    _print_json(doc)
