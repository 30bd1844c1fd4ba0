"""Teacher fine-tuning recipes: named presets as data, and ``auto``, which picks one from the task itself.

Published small-task GLUE practice, not numbers tuned to the tasks in ``../shared``:

- BERT (Devlin et al., 2019): lr in {2e-5, 3e-5, 5e-5}, batch {16, 32}, 2-4 epochs, length 128; "fine-tuning
  was sometimes unstable on small datasets".
- RoBERTa (Liu et al., 2019): 10 epochs, 6% warm-up, batch {16, 32} on the small GLUE tasks.
- Mosbach et al. (2021), "On the stability of fine-tuning BERT": failures on small sets (RTE, MRPC, CoLA) come
  from too few optimizer steps, not from the data size itself; train longer (more steps), warm up 10% of them.

Smaller sets get a lower learning rate (the low end of BERT's grid) and more epochs.
So a recipe is a tier of training-set size, and the epochs of a tier are derived from a **minimum number of
optimizer steps** (at least ``min_epochs``, at most ``max_epochs``): 2.5k pairs (RTE) get 7 epochs of batch 16,
635 (WNLI) the tier's cap, 105k (QNLI) 2 epochs of batch 32. Pair vs single sentence and regression enter
through the length: ``max_seq_len`` is the p99 of the train split's token lengths under the model's tokenizer,
rounded up to a multiple of 16 and kept in [32, 128] (128 is the GLUE convention of BERT's ``run_glue``); the
teacher is scored at that length and a pipeline scores its student at the same one.

A tier's learning rate is BERT-base's (width 768) and is **scaled by the model's width**, ``lr * 768 / hidden``
(kept within [0.5x, 4x]): ELECTRA (Clark et al., 2020, appendix) fine-tunes Small (H256) at 3e-4, Base (H768) at
1e-4 and Large (H1024) at 5e-5, roughly inversely proportional to the width. Measured on MRPC with the 6-layer
H384 MiniLM (``tools/results/teacher_small_tasks.json``): BERT-base's 3e-5 left the teacher at F1 0.858 against
0.812 for always answering "paraphrase"; 768/384 doubles the tier's rate to 6e-5, which reached F1 0.872
(``docs/RESULTS.md``, teacher recipes).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdnas_deploy.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from kdnas_deploy.tasks import Task

log = logging.getLogger(__name__)

LENGTH_QUANTILE = 0.99
LENGTH_ROUND = 16
LENGTH_FLOOR = 32
LENGTH_CAP = 128
REFERENCE_WIDTH = 768  # the width a tier's learning rate is given for (BERT-base)
WIDTH_SCALE_RANGE = (0.5, 4.0)


def width_scale(hidden_size: int | None) -> float:
    """``REFERENCE_WIDTH / hidden_size`` within :data:`WIDTH_SCALE_RANGE` (1.0 when the width is unknown)."""
    if not hidden_size or hidden_size <= 0:
        return 1.0
    low, high = WIDTH_SCALE_RANGE
    return float(min(max(REFERENCE_WIDTH / hidden_size, low), high))


@dataclass(frozen=True)
class Recipe:
    """A named fine-tuning recipe: the data a :class:`FinetuneConfig` is built from."""

    name: str
    description: str
    batch_size: int
    learning_rate: float
    warmup_ratio: float
    min_epochs: float
    max_epochs: float
    min_steps: int = 0  # optimizer steps the epochs are raised to (capped by max_epochs); 0: min_epochs
    max_train_rows: int | None = None  # the tier's upper bound of training rows (None: no bound)
    max_seq_len: int | None = None  # None: from the task's token lengths
    width_scaled: bool = False  # learning_rate is BERT-base's; scale it by the model's width (see module doc)

    def epochs_for(self, train_rows: int | None) -> float:
        """``min_epochs``, raised so the run makes at least ``min_steps`` optimizer steps, capped at
        ``max_epochs``."""
        if not train_rows or not self.min_steps:
            return float(self.min_epochs)
        steps_per_epoch = max(1, math.ceil(train_rows / self.batch_size))
        need = math.ceil(self.min_steps / steps_per_epoch)
        return float(min(max(self.min_epochs, need), self.max_epochs))

    def learning_rate_for(self, hidden_size: int | None) -> float:
        """The recipe's rate, scaled by :func:`width_scale` when the recipe is ``width_scaled``."""
        return float(self.learning_rate * (width_scale(hidden_size) if self.width_scaled else 1.0))

    def settings(self, train_rows: int | None = None, max_seq_len: int | None = None,
                 hidden_size: int | None = None) -> dict[str, Any]:  # fmt: skip
        """The :class:`~kdnas_deploy.distill.finetune.FinetuneConfig` fields of this recipe for a train split of
        ``train_rows`` rows, a task length of ``max_seq_len`` (a fixed-length recipe keeps its own) and a model
        of width ``hidden_size``."""
        length = self.max_seq_len or max_seq_len or LENGTH_CAP
        return {"epochs": self.epochs_for(train_rows), "batch_size": self.batch_size,
                "learning_rate": self.learning_rate_for(hidden_size), "warmup_ratio": self.warmup_ratio,
                "max_seq_len": int(length)}  # fmt: skip


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES or recipe.name == "auto":
        raise ConfigError(f"teacher recipe {recipe.name!r} is already registered")
    RECIPES[recipe.name] = recipe
    return recipe


# The fixed presets of earlier releases (lengths fixed, epochs fixed).
register(Recipe("default", "3 epochs, len 128, lr 5e-5 (BERT's GLUE recipe)", 32, 5e-5, 0.06, 3, 3,
                max_seq_len=128))  # fmt: skip
register(Recipe("fast", "1 epoch, len 64, lr 1e-4: large single-sentence tasks on CPU (e.g. SST-2)", 32, 1e-4,
                0.06, 1, 1, max_seq_len=64))  # fmt: skip
# Size tiers (auto picks the first whose max_train_rows holds the train split). Length from the task.
register(Recipe("glue-tiny", "< 1k rows (WNLI): batch 16, lr 2e-5 x 768/width, 10% warm-up, >= 1000 steps, "
                "<= 10 epochs", 16, 2e-5, 0.10, 5, 10, min_steps=1000, max_train_rows=1_000,
                width_scaled=True))  # fmt: skip
register(Recipe("glue-small", "1k-20k rows (RTE, MRPC, STS-B, CoLA): batch 16, lr 3e-5 x 768/width, 10% warm-up, "
                ">= 1000 steps, 3-10 epochs", 16, 3e-5, 0.10, 3, 10, min_steps=1000, max_train_rows=20_000,
                width_scaled=True))  # fmt: skip
register(Recipe("glue-medium", "20k-200k rows (SST-2, QNLI): batch 32, lr 5e-5 x 768/width, 10% warm-up, 2 epochs",
                32, 5e-5, 0.10, 2, 2, max_train_rows=200_000, width_scaled=True))  # fmt: skip
register(Recipe("glue-large", "> 200k rows (QQP, MNLI): batch 32, lr 5e-5 x 768/width, 10% warm-up, 1 epoch", 32,
                5e-5, 0.10, 1, 1, width_scaled=True))  # fmt: skip

TIERS = ("glue-tiny", "glue-small", "glue-medium", "glue-large")


def preset_names() -> list[str]:
    return ["auto", *RECIPES]


def tier_for(train_rows: int) -> Recipe:
    """The size tier holding ``train_rows`` training rows."""
    for name in TIERS:
        recipe = RECIPES[name]
        if recipe.max_train_rows is None or train_rows <= recipe.max_train_rows:
            return recipe
    return RECIPES[TIERS[-1]]  # pragma: no cover - the last tier has no bound


def seq_len_from_lengths(lengths: Any, quantile: float = LENGTH_QUANTILE, cap: int = LENGTH_CAP) -> int:
    """The ``quantile`` of token ``lengths`` rounded up to a multiple of 16, in ``[32, cap]``."""
    import numpy as np

    arr = np.asarray(lengths, dtype=float)
    if arr.size == 0:
        return int(cap)
    raw = float(np.quantile(arr, quantile))
    return int(min(max(LENGTH_FLOOR, math.ceil(raw / LENGTH_ROUND) * LENGTH_ROUND), cap))


@dataclass(frozen=True)
class Choice:
    """What a preset resolved to for one task: the config's fields and why."""

    preset: str
    recipe: str
    settings: dict[str, Any]
    train_rows: int
    length: dict[str, Any]
    kind: str
    hidden_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "recipe": self.recipe, "train_rows": self.train_rows, "kind": self.kind,
                "length": self.length, "hidden_size": self.hidden_size, "settings": dict(self.settings)}  # fmt: skip


def task_kind(task: Task) -> str:
    return ("regression" if task.is_regression else "classification") + (" pair" if task.is_pair else " single")


def resolve(preset: str, task: Task, tokenizer: Any, train_rows: int | None = None,
            length_split: str = "train", hidden_size: int | None = None) -> Choice:  # fmt: skip
    """``preset`` (``auto`` or a registered name) for ``task``: ``auto`` picks the size tier of the train split;
    a recipe without a fixed length takes the p99 of ``length_split``'s token lengths; a tier's learning rate is
    scaled to the model's width ``hidden_size`` (see module doc)."""
    if preset != "auto" and preset not in RECIPES:
        raise ConfigError(f"unknown teacher preset {preset!r} (known: {', '.join(preset_names())})")
    rows = int(train_rows) if train_rows is not None else len(task.load_split("train"))
    recipe = tier_for(rows) if preset == "auto" else RECIPES[preset]
    length: dict[str, Any] = {"source": "recipe", "max_seq_len": recipe.max_seq_len}
    if recipe.max_seq_len is None:
        length = task_seq_len(task, tokenizer, length_split)
    st = recipe.settings(rows, length["max_seq_len"], hidden_size)
    choice = Choice(preset, recipe.name, st, rows, length, task_kind(task), hidden_size)
    log.info("teacher recipe %s for %s (%s, %d train rows): %g epochs, batch %d, lr %g, warm-up %g, len %d",
             recipe.name, task.name, choice.kind, rows, st["epochs"], st["batch_size"], st["learning_rate"],
             st["warmup_ratio"], st["max_seq_len"])  # fmt: skip
    return choice


def task_seq_len(task: Task, tokenizer: Any, split: str = "train", limit: int | None = 20_000) -> dict[str, Any]:
    """The teacher's ``max_seq_len`` from ``split``'s token lengths (the first ``limit`` rows)."""
    from kdnas_deploy.tasks.lengths import length_stats, task_texts, token_lengths

    lengths = token_lengths(tokenizer, task_texts(task, split, limit))
    seq = seq_len_from_lengths(lengths)
    return {"source": f"p{round(LENGTH_QUANTILE * 100)} of {split} token lengths", "max_seq_len": seq,
            "lengths": length_stats(lengths)}  # fmt: skip

