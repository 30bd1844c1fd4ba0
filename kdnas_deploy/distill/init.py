"""Initialise a student from a BERT teacher: layers picked by the layer mapping, and inside them the most
important attention heads, FFN neurons and hidden dimensions (scored by activations on a data sample).

Heads are ranked by the norm of their contribution to the attention output; a student head of width
``k * teacher_head_dim`` takes ``k`` teacher heads. Where the student is wider than the teacher, the extra
rows/columns keep their random initialisation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.distill.config import teacher_layer_map
from kdnas_deploy.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel


def _bert(model: Any) -> Any:
    bert = getattr(model, "bert", None)
    if bert is None or not hasattr(bert, "encoder"):
        raise ModelError(
            f"--init teacher needs a BERT teacher, got {type(model).__name__}; use --init random"
        )
    return bert


def importance_scores(teacher: PreTrainedModel, batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Per-layer head and neuron scores and global hidden-dimension scores from teacher activations."""
    import torch

    bert = _bert(teacher)
    cfg = teacher.config
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    head_dim = cfg.hidden_size // n_heads
    heads = np.zeros((n_layers, n_heads))
    neurons = np.zeros((n_layers, cfg.intermediate_size))
    hidden = np.zeros(cfg.hidden_size)
    handles = []
    current_mask: list[torch.Tensor] = []

    def masked_mean_abs(x: torch.Tensor) -> torch.Tensor:
        m = current_mask[0].unsqueeze(-1).to(x.dtype)
        return (x.abs() * m).sum((0, 1)) / m.sum()

    for li, layer in enumerate(bert.encoder.layer):
        w_o = layer.attention.output.dense.weight.detach()  # (H, H)
        col_norm = w_o.view(w_o.shape[0], n_heads, head_dim).norm(dim=(0, 2))
        w_ffn_out = layer.output.dense.weight.detach()  # (H, F)

        def attn_hook(_m, inputs, li=li, col_norm=col_norm):
            ctx = inputs[0]
            per_head = masked_mean_abs(ctx).view(n_heads, head_dim).sum(-1)
            heads[li] += (per_head * col_norm).numpy()

        def ffn_hook(_m, inputs, li=li, w=w_ffn_out):
            neurons[li] += (masked_mean_abs(inputs[0]) * w.norm(dim=0)).numpy()

        def out_hook(_m, _inputs, output):
            hidden[:] += masked_mean_abs(output[0] if isinstance(output, tuple) else output).numpy()

        handles.append(layer.attention.output.dense.register_forward_pre_hook(attn_hook))
        handles.append(layer.output.dense.register_forward_pre_hook(ffn_hook))
        handles.append(layer.register_forward_hook(out_hook))
    try:
        with torch.inference_mode():
            for batch in batches:
                current_mask[:] = [batch["attention_mask"]]
                teacher(**batch)
    finally:
        for h in handles:
            h.remove()
    return {"heads": heads, "neurons": neurons, "hidden": hidden}


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(scores))
    return np.sort(np.argsort(-scores, kind="stable")[:k])


def _copy(
    dst: torch.Tensor, src: torch.Tensor, rows: np.ndarray | None = None, cols: np.ndarray | None = None
) -> None:
    """Copy ``src[rows][:, cols]`` into the leading block of ``dst`` (dst may be larger)."""
    import torch

    with torch.no_grad():
        s = src
        if rows is not None:
            s = s[torch.as_tensor(rows)]
        if cols is not None:
            s = s[:, torch.as_tensor(cols)]
        if s.ndim == 1:
            dst[: s.shape[0]] = s
        else:
            dst[: s.shape[0], : s.shape[1]] = s


def init_from_teacher(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    arch: Architecture,
    mapping: str,
    scores: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Copy teacher weights into ``student`` in place; returns what was kept (for the distill record)."""
    t_bert, s_bert = _bert(teacher), _bert(student)
    tc = teacher.config
    t_heads, t_head_dim = tc.num_attention_heads, tc.hidden_size // tc.num_attention_heads
    if scores is None:  # weight-magnitude fallback
        scores = {
            "heads": np.ones((tc.num_hidden_layers, t_heads)),
            "neurons": np.stack(
                [lyr.output.dense.weight.detach().norm(dim=0).numpy() for lyr in t_bert.encoder.layer]
            ),
            "hidden": t_bert.embeddings.LayerNorm.weight.detach().abs().numpy(),
        }
    hid = _top(scores["hidden"], arch.hidden_size)
    layers = teacher_layer_map(arch.num_layers, tc.num_hidden_layers, mapping)

    te, se = t_bert.embeddings, s_bert.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        _copy(getattr(se, name).weight, getattr(te, name).weight, cols=hid)
    _copy(se.LayerNorm.weight, te.LayerNorm.weight, rows=hid)
    _copy(se.LayerNorm.bias, te.LayerNorm.bias, rows=hid)

    kept: list[dict[str, Any]] = []
    s_width = arch.hidden_size  # all heads together
    n_take = min(t_heads, -(-s_width // t_head_dim))
    for s_layer, t_index in zip(s_bert.encoder.layer, layers, strict=True):
        t_layer = t_bert.encoder.layer[t_index - 1]
        head_order = np.argsort(-scores["heads"][t_index - 1], kind="stable")[:n_take]
        dims = np.concatenate([np.arange(h * t_head_dim, (h + 1) * t_head_dim) for h in head_order])[:s_width]
        ta, sa = t_layer.attention, s_layer.attention
        for proj in ("query", "key", "value"):
            _copy(getattr(sa.self, proj).weight, getattr(ta.self, proj).weight, rows=dims, cols=hid)
            _copy(getattr(sa.self, proj).bias, getattr(ta.self, proj).bias, rows=dims)
        _copy(sa.output.dense.weight, ta.output.dense.weight, rows=hid, cols=dims)
        _copy(sa.output.dense.bias, ta.output.dense.bias, rows=hid)
        _copy(sa.output.LayerNorm.weight, ta.output.LayerNorm.weight, rows=hid)
        _copy(sa.output.LayerNorm.bias, ta.output.LayerNorm.bias, rows=hid)
        neu = _top(scores["neurons"][t_index - 1], arch.ffn_size)
        _copy(s_layer.intermediate.dense.weight, t_layer.intermediate.dense.weight, rows=neu, cols=hid)
        _copy(s_layer.intermediate.dense.bias, t_layer.intermediate.dense.bias, rows=neu)
        _copy(s_layer.output.dense.weight, t_layer.output.dense.weight, rows=hid, cols=neu)
        _copy(s_layer.output.dense.bias, t_layer.output.dense.bias, rows=hid)
        _copy(s_layer.output.LayerNorm.weight, t_layer.output.LayerNorm.weight, rows=hid)
        _copy(s_layer.output.LayerNorm.bias, t_layer.output.LayerNorm.bias, rows=hid)
        kept.append(
            {
                "teacher_layer": int(t_index),
                "heads": [int(h) for h in head_order],
                "ffn_neurons": int(len(neu)),
            }
        )

    if getattr(t_bert, "pooler", None) is not None and getattr(s_bert, "pooler", None) is not None:
        _copy(s_bert.pooler.dense.weight, t_bert.pooler.dense.weight, rows=hid, cols=hid)
        _copy(s_bert.pooler.dense.bias, t_bert.pooler.dense.bias, rows=hid)
    if hasattr(teacher, "classifier") and hasattr(student, "classifier"):
        _copy(student.classifier.weight, teacher.classifier.weight, cols=hid)
        _copy(student.classifier.bias, teacher.classifier.bias)
    return {"layer_mapping": mapping, "hidden_dims_kept": int(len(hid)), "layers": kept}
