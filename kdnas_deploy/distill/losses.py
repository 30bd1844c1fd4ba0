"""Distillation losses, by name in :data:`LOSSES`. Each takes a :class:`LossInputs` and returns a scalar."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class LossInputs:
    student_logits: torch.Tensor  # (B, C)
    teacher_logits: torch.Tensor  # (B, C)
    labels: torch.Tensor  # (B,)
    mask: torch.Tensor  # (B, S) 1 = real token
    is_regression: bool
    temperature: float
    # hidden-state pairs: (student hidden already projected to the teacher width, teacher hidden)
    hidden_pairs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    # relation inputs: {"q"|"k"|"v": (student (B,S,Hs), teacher (B,S,Ht))}
    relations: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    relation_heads: int = 8


def kd_loss(x: LossInputs) -> torch.Tensor:
    """Soft-label KD: KL(teacher || student) of temperature-softened distributions, times T^2."""
    import torch.nn.functional as F

    if x.is_regression:
        return F.mse_loss(x.student_logits.float(), x.teacher_logits.float())
    t = x.temperature
    log_p_s = F.log_softmax(x.student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(x.teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * (t * t)


def hard_loss(x: LossInputs) -> torch.Tensor:
    import torch.nn.functional as F

    if x.is_regression:
        return F.mse_loss(x.student_logits.float().squeeze(-1), x.labels.float())
    return F.cross_entropy(x.student_logits.float(), x.labels.long())


def hidden_loss(x: LossInputs) -> torch.Tensor:
    """Mean over layer pairs of the MSE of (projected) student and teacher hidden states on real tokens."""
    import torch

    if not x.hidden_pairs:
        return x.student_logits.new_zeros(())
    m = x.mask.unsqueeze(-1).float()
    total = torch.zeros((), dtype=torch.float32)
    for s, t in x.hidden_pairs:
        diff = (s.float() - t.float()) ** 2 * m
        total = total + diff.sum() / (m.sum() * s.shape[-1])
    return total / len(x.hidden_pairs)


def _relation_log_probs(h: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    b, s, width = h.shape
    d = width // heads
    r = h.float().view(b, s, heads, d).transpose(1, 2)  # (B, R, S, d)
    scores = r @ r.transpose(-1, -2) / math.sqrt(d)  # (B, R, S, S)
    scores = scores.masked_fill(mask[:, None, None, :] == 0, -1e9)
    return scores.log_softmax(dim=-1)


def relation_loss(x: LossInputs) -> torch.Tensor:
    """MiniLMv2: KL between teacher and student self-attention relations (Q-Q, K-K, V-V), split into
    ``relation_heads`` relation heads, so it works whatever the two models' head counts are."""
    import torch

    if not x.relations:
        return x.student_logits.new_zeros(())
    valid = x.mask.float()  # queries to average over
    total = torch.zeros((), dtype=torch.float32)
    for s, t in x.relations.values():
        heads = relation_head_count(s.shape[-1], t.shape[-1], x.relation_heads)
        log_s = _relation_log_probs(s, heads, x.mask)
        log_t = _relation_log_probs(t, heads, x.mask)
        p_t = log_t.exp()
        kl = (p_t * (log_t - log_s)).sum(-1)  # (B, R, S)
        total = total + (kl * valid[:, None, :]).sum() / (valid.sum() * heads)
    return total / len(x.relations)


def relation_head_count(width_a: int, width_b: int, wanted: int) -> int:
    g = math.gcd(width_a, width_b)
    for h in range(min(wanted, g), 0, -1):
        if g % h == 0:
            return h
    return 1


LossFn = Callable[[LossInputs], Any]
LOSSES: dict[str, LossFn] = {
    "kd": kd_loss,
    "hard": hard_loss,
    "hidden": hidden_loss,
    "relation": relation_loss,
}
