"""The distillation objective of one student: hidden-state projections, attention-relation capture and the
weighted sum of the configured losses on a batch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kdnas_deploy.distill.config import DistillConfig
from kdnas_deploy.distill.data import collate
from kdnas_deploy.distill.losses import LOSSES, LossInputs

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.tasks import Task


class Capture:
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


def projections_for(arch: Architecture, t_hidden: int, pairs: list[tuple[int, int]]) -> Any:
    """One linear map per hidden-state pair (identity where the widths agree)."""
    import torch

    projections = torch.nn.ModuleList([torch.nn.Linear(arch.hidden_size, t_hidden) for _ in pairs])
    if arch.hidden_size == t_hidden:
        with torch.no_grad():
            for proj in projections:
                proj.weight.copy_(torch.eye(t_hidden))
                proj.bias.zero_()
    return projections


class DistillLoss:
    """``loss(batch_indices)``: the weighted sum of the configured distillation losses on one batch."""

    def __init__(self, *, student: Any, projections: Any, source: Any, train_enc: Any, task: Task,
                 config: DistillConfig, pairs: list[tuple[int, int]], rel_layer: int,
                 t_model: Any) -> None:  # fmt: skip
        import torch

        self.student, self.projections, self.source, self.enc = student, projections, source, train_enc
        self.task, self.config, self.pairs, self.rel_layer = task, config, pairs, rel_layer
        self.t_attn = t_model.bert.encoder.layer[rel_layer - 1].attention.self if config.relation_weight > 0 else None
        self.capture = Capture(student.bert.encoder.layer[-1].attention.self) if self.t_attn is not None else None
        self.labels = torch.as_tensor(train_enc.labels)
        self.weights = {k: w for k, w in config.loss_weights().items() if w > 0}

    def _relations(self, tb: Any) -> dict[str, Any]:
        import torch

        if self.t_attn is None or self.capture is None:
            return {}
        with torch.no_grad():
            h_in = tb.hidden[self.rel_layer - 1]
            t_qkv = {"q": self.t_attn.query(h_in), "k": self.t_attn.key(h_in), "v": self.t_attn.value(h_in)}
        return {k: (self.capture.out[k], t_qkv[k]) for k in ("q", "k", "v")}

    def __call__(self, idx: np.ndarray) -> torch.Tensor:
        import torch

        inputs = collate(self.enc, idx)
        tb = self.source.batch(self.enc, idx, inputs)
        out = self.student(**inputs, output_hidden_states=bool(self.pairs))
        hidden_pairs = [
            (proj(out.hidden_states[s]), tb.hidden[t])
            for proj, (s, t) in zip(self.projections, self.pairs, strict=True)
        ]
        cfg = self.config
        x = LossInputs(out.logits, tb.logits, self.labels[idx], inputs["attention_mask"], self.task.is_regression,
                       cfg.temperature, hidden_pairs, self._relations(tb), cfg.relation_heads)  # fmt: skip
        total = torch.zeros(())
        for name, w in self.weights.items():
            total = total + w * LOSSES[name](x)
        return total

    def close(self) -> None:
        if self.capture is not None:
            self.capture.remove()
