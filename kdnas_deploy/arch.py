"""The ``Architecture`` value type: a homogeneous BERT student described by four numbers.

An architecture is written ``L=4,H=256,A=4,F=1024`` (layers, hidden size, attention heads, FFN size) or
as JSON ``{"num_layers": 4, "hidden_size": 256, "num_heads": 4, "ffn_size": 1024}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas_deploy.errors import ArchitectureError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import BertConfig

ARCH_SCHEMA_VERSION = 1
BERT_VOCAB_SIZE = 30522
BERT_MAX_POSITIONS = 512
BERT_TYPE_VOCAB = 2

_SHORT_KEYS = {"L": "num_layers", "H": "hidden_size", "A": "num_heads", "F": "ffn_size"}
_LONG_ALIASES = {
    "num_layers": "num_layers",
    "num_hidden_layers": "num_layers",
    "layers": "num_layers",
    "hidden_size": "hidden_size",
    "hidden": "hidden_size",
    "num_heads": "num_heads",
    "num_attention_heads": "num_heads",
    "heads": "num_heads",
    "ffn_size": "ffn_size",
    "intermediate_size": "ffn_size",
    "ffn": "ffn_size",
}


@dataclass(frozen=True, order=True)
class Architecture:
    """A BERT student whose layers all share one shape."""

    num_layers: int
    hidden_size: int
    num_heads: int
    ffn_size: int

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "num_heads", "ffn_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ArchitectureError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ArchitectureError(
                f"num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}"
            )

    # ------------------------------------------------------------------ identity / text forms
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def variant(self) -> tuple[int, int, int]:
        """The layer shape ``(hidden, heads, ffn)`` that latency tables are keyed by."""
        return (self.hidden_size, self.num_heads, self.ffn_size)

    def short(self) -> str:
        return f"L={self.num_layers},H={self.hidden_size},A={self.num_heads},F={self.ffn_size}"

    def __str__(self) -> str:
        return self.short()

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.num_layers, self.hidden_size, self.num_heads, self.ffn_size)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps({"schema_version": ARCH_SCHEMA_VERSION, **self.to_dict()})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        if not isinstance(data, dict):
            raise ArchitectureError(f"architecture must be a mapping, got {type(data).__name__}")
        if "architecture" in data and isinstance(data["architecture"], dict):
            data = data["architecture"]
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("schema_version",):
                continue
            canon = _LONG_ALIASES.get(key) or _SHORT_KEYS.get(key)
            if canon is None:
                raise ArchitectureError(f"unknown architecture key {key!r}")
            values[canon] = value
        missing = [k for k in _SHORT_KEYS.values() if k not in values]
        if missing:
            raise ArchitectureError(f"architecture is missing {', '.join(missing)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchitectureError(f"architecture JSON is malformed: {exc.msg}") from None
        return cls.from_dict(data)

    @classmethod
    def from_string(cls, text: str) -> Architecture:
        """Parse ``L=4,H=256,A=4,F=1024`` (keys may also be the long names)."""
        values: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in re.split(r"[,\s]+", text.strip()))):
            if "=" not in part:
                raise ArchitectureError(f"cannot parse architecture {text!r}: expected KEY=VALUE, got {part!r}")
            key, raw = (s.strip() for s in part.split("=", 1))
            canon = _SHORT_KEYS.get(key.upper()) if len(key) == 1 else _LONG_ALIASES.get(key)
            if canon is None:
                raise ArchitectureError(f"unknown architecture key {key!r} in {text!r} (use L, H, A, F)")
            try:
                values[canon] = int(raw)
            except ValueError:
                raise ArchitectureError(f"{key}={raw!r} is not an integer") from None
        return cls.from_dict(values)

    @classmethod
    def parse(cls, spec: str | Path) -> Architecture:
        """Parse an architecture given on a command line: a JSON file, inline JSON or ``L=..,H=..``."""
        text = str(spec).strip()
        if text.startswith("{"):
            return cls.from_json(text)
        path = Path(text)
        if path.suffix.lower() == ".json" or path.is_file():
            if not path.is_file():
                raise ArchitectureError(f"architecture file not found: {path}")
            return cls.from_json(path.read_text(encoding="utf-8"))
        return cls.from_string(text)

    # ------------------------------------------------------------------ transformers interop
    def to_bert_config(self, num_labels: int = 2, **overrides: Any) -> BertConfig:
        from transformers import BertConfig

        kwargs: dict[str, Any] = dict(
            vocab_size=BERT_VOCAB_SIZE,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.ffn_size,
            max_position_embeddings=BERT_MAX_POSITIONS,
            type_vocab_size=BERT_TYPE_VOCAB,
            num_labels=num_labels,
        )
        kwargs.update(overrides)
        config = BertConfig(**kwargs)
        config._attn_implementation = "eager"
        return config

    @classmethod
    def from_config(cls, config: Any) -> Architecture:
        """Read the architecture of a Hugging Face BERT-like config."""
        try:
            return cls(
                num_layers=int(config.num_hidden_layers),
                hidden_size=int(config.hidden_size),
                num_heads=int(config.num_attention_heads),
                ffn_size=int(config.intermediate_size),
            )
        except AttributeError as exc:
            raise ArchitectureError(f"config is not BERT-like: {exc}") from None

    # ------------------------------------------------------------------ size and cost
    def num_parameters(
        self,
        num_labels: int = 2,
        vocab_size: int = BERT_VOCAB_SIZE,
        max_positions: int = BERT_MAX_POSITIONS,
        type_vocab: int = BERT_TYPE_VOCAB,
    ) -> int:
        """Parameters of the matching ``BertForSequenceClassification`` (embeddings, pooler, head)."""
        h, f = self.hidden_size, self.ffn_size
        embeddings = (vocab_size + max_positions + type_vocab) * h + 2 * h
        per_layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 2 * (2 * h)
        pooler = h * h + h
        head = h * num_labels + num_labels
        return embeddings + self.num_layers * per_layer + pooler + head

    def flops(self, batch: int = 1, seq: int = 128, num_labels: int = 2) -> int:
        """Multiply-add FLOPs (2 per MAC) of one forward pass, matrix products only."""
        h, f, s = self.hidden_size, self.ffn_size, seq
        per_layer = 2 * s * (4 * h * h + 2 * h * f) + 2 * 2 * s * s * h
        pooler_head = 2 * (h * h + h * num_labels)
        return batch * (self.num_layers * per_layer + pooler_head)
