"""Student builder: ``Architecture`` -> ``BertForSequenceClassification`` with eager attention.

Eager attention matters: ONNX Runtime's transformer optimizer fuses the attention subgraph that the eager
implementation exports; SDPA exports a graph it does not fuse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdnas_deploy.arch import Architecture

if TYPE_CHECKING:  # pragma: no cover
    from transformers import BertForSequenceClassification


def build_student(
    arch: Architecture,
    num_labels: int = 2,
    seed: int | None = 0,
    problem_type: str | None = None,
    **config_overrides: Any,
) -> BertForSequenceClassification:
    """A randomly initialised (seeded) BERT sequence classifier of shape ``arch``, in eval mode."""
    import torch
    from transformers import BertForSequenceClassification

    config = arch.to_bert_config(num_labels=num_labels, **config_overrides)
    if problem_type is not None:
        config.problem_type = problem_type
    if seed is not None:
        torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.config._attn_implementation = "eager"
    return model.eval()
