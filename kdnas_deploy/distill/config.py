"""``DistillConfig``: a frozen distillation recipe with named presets (``proxy``, ``full``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from kdnas_deploy.config import Presets, build
from kdnas_deploy.errors import ConfigError
from kdnas_deploy.limits import MAX_EPOCHS, check_float, check_int

LAYER_MAPPINGS = ("uniform", "last", "uniform+last")
INITS = ("teacher", "random")


@dataclass(frozen=True)
class DistillConfig:
    """How a student is distilled. Loss weights of 0 switch a loss off (see ``losses.LOSSES``)."""

    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 1e-4
    max_seq_len: int = 128
    temperature: float = 2.0
    init: str = "teacher"
    init_from: str | None = None  # with init "teacher": copy weights from this BERT instead (progressive shrinking)
    seed: int = 42
    kd_weight: float = 1.0  # soft-label KL on logits (MSE for regression)
    hard_weight: float = 0.0  # cross-entropy / MSE on gold labels
    hidden_weight: float = 1.0  # MSE between mapped hidden states (learned projection if widths differ)
    relation_weight: float = 1.0  # MiniLMv2 self-attention relations (Q-Q, K-K, V-V) of one layer pair
    layer_mapping: str = "uniform+last"
    relation_layer: int = -1  # teacher layer whose relations are transferred (to the student's last layer)
    relation_heads: int = 8  # relation heads (reduced to a divisor of both widths)
    augment_copies: int = 0  # masked copies of every training example, labelled by the teacher (0: off)
    augment_mask_rate: float = 0.15
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    eval_batch_size: int = 128
    checkpoint_every: int = 500  # steps between mid-epoch checkpoints (0: epoch ends only)
    eval_every: int = 0  # steps between mid-epoch evaluations on the dev split (0: epoch ends only)
    ema_decay: float = 0.0  # > 0: evaluate and keep an exponential moving average of the student's weights
    cache_max_mb: int = 1024  # a teacher-output cache larger than this is not built: the teacher runs live

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {INITS}, got {self.init!r}")
        if self.init_from is not None and self.init != "teacher":
            raise ConfigError("init_from (--init-from) needs init 'teacher': it replaces the teacher as weight source")
        if self.layer_mapping not in LAYER_MAPPINGS:
            raise ConfigError(f"layer_mapping must be one of {LAYER_MAPPINGS}, got {self.layer_mapping!r}")
        check_float("epochs", self.epochs, high=MAX_EPOCHS)
        check_int("batch_size", self.batch_size, "batch")
        if self.epochs <= 0 or self.batch_size <= 0 or self.learning_rate <= 0 or self.max_seq_len < 8:
            raise ConfigError("epochs, batch_size, learning_rate must be positive and max_seq_len >= 8")
        if self.augment_copies < 0 or not 0 < self.augment_mask_rate < 1:
            raise ConfigError("augment_copies (--augment) must be >= 0 and augment_mask_rate in (0, 1)")
        if self.checkpoint_every < 0 or self.eval_every < 0:
            raise ConfigError("checkpoint_every and eval_every (--eval-every) must be >= 0")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay (--ema-decay) must be in [0, 1), got {self.ema_decay}")
        if self.temperature <= 0:
            raise ConfigError("temperature must be positive")
        weights = (self.kd_weight, self.hard_weight, self.hidden_weight, self.relation_weight)
        if min(weights) < 0 or sum(weights) == 0:
            raise ConfigError("loss weights must be >= 0 and not all 0")

    @classmethod
    def full(cls, **overrides: Any) -> DistillConfig:
        """The winner's distillation on the whole training set: every loss, teacher run live."""
        return DISTILL_PRESETS.get("full", **overrides)

    @classmethod
    def proxy(cls, **overrides: Any) -> DistillConfig:
        """A short run for search candidates: one epoch, length 64, logits + last-layer relations only, so
        the teacher-output cache holds just the logits and one layer's hidden states (fp16)."""
        return DISTILL_PRESETS.get("proxy", **overrides)

    def loss_weights(self) -> dict[str, float]:
        return {
            "kd": self.kd_weight,
            "hard": self.hard_weight,
            "hidden": self.hidden_weight,
            "relation": self.relation_weight,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        """Strict: unknown keys and wrong types are refused with one line (:func:`kdnas_deploy.config.build`)."""
        return build(cls, data, "distill")

    def with_overrides(self, **kwargs: Any) -> DistillConfig:
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


# Presets as data behind one factory: DISTILL_PRESETS.get("proxy", epochs=2.0), or DISTILL_PRESETS["proxy"]().
DISTILL_PRESETS: Presets[DistillConfig] = Presets(
    "distill",
    DistillConfig.from_dict,
    data={
        "full": {},
        "proxy": {
            "epochs": 1.0, "max_seq_len": 64, "hidden_weight": 0.0, "relation_weight": 1.0, "checkpoint_every": 0
        },
    },
)


def teacher_layer_map(num_student: int, num_teacher: int, mapping: str) -> list[int]:
    """Teacher layer (1-based) matched to each student layer 1..num_student (used for initialisation).

    ``uniform``: every k-th layer, k = teacher // student (TinyBERT); ``last``: the top layers;
    ``uniform+last``: evenly spread with the last student layer on the last teacher layer."""
    if mapping == "last":
        return [max(1, num_teacher - num_student + i + 1) for i in range(num_student)]
    if mapping == "uniform":
        step = max(1, num_teacher // num_student)
        return [min(num_teacher, (i + 1) * step) for i in range(num_student)]
    return [max(1, (i + 1) * num_teacher // num_student) for i in range(num_student)]


def student_layer_pairs(num_student: int, num_teacher: int, mapping: str) -> list[tuple[int, int]]:
    """``(student_layer, teacher_layer)`` pairs (1-based) for the hidden-state loss."""
    if mapping == "last":
        return [(num_student, num_teacher)]
    teacher = teacher_layer_map(num_student, num_teacher, mapping)
    return list(zip(range(1, num_student + 1), teacher, strict=True))
