"""The inputs every timed model gets: one served request of random token ids at a (batch, seq) shape."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from kdnas_deploy.errors import ModelError

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_VOCAB = 30522  # BERT's WordPiece vocabulary (what the students are built with)


def model_inputs(batch: int, seq: int, vocab_size: int = DEFAULT_VOCAB, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids drawn once (seeded) from ``[min(1000, vocab - 1), vocab)``, a full attention mask and segment
    ids of zero (int64): a request without padding, as a latency table prices it."""
    vocab = int(vocab_size)
    rng = np.random.default_rng(seed)
    ids = rng.integers(min(1000, vocab - 1), vocab, size=(batch, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def feed_for(names: Iterable[str], inputs: dict[str, Any], where: Any = "the model") -> dict[str, Any]:
    """The entries of ``inputs`` a model takes (``names``, e.g. an ONNX session's inputs), in that order;
    ModelError when it wants one that is not a BERT classifier input."""
    names = list(names)
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ModelError(f"{where}: input(s) {', '.join(missing)} are not BERT classifier inputs")
    return {n: inputs[n] for n in names}
