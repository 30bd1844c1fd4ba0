"""Prediction agreement of an exported graph with PyTorch: how an int8 export is judged.

Dynamic int8 quantization moves logits by more than any absolute tolerance that still catches a broken graph
would allow, while the predictions stay the same. So an int8 export is judged by the share of inputs on which
ONNX Runtime and PyTorch *predict* the same thing (``--min-agreement``, default 0.9) and, with a task, by its
dev metric; the logit tolerance only warns for int8 (fp32/fp16 exports are still refused beyond it).
OpenVINO's bf16 inference precision (8 bits of mantissa) moves logits the same way and is judged the same way.

- classification: the share of rows whose argmax agrees (``kind: argmax``);
- regression: the share of rows on the same side of the PyTorch mean (``kind: sign``), with the Pearson
  correlation of the two outputs beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdnas_deploy.errors import ParityError

DEFAULT_MIN_AGREEMENT = 0.9
JUDGED_PRECISIONS = frozenset({"int8", "bf16"})


def prediction_agreement(ref: np.ndarray, got: np.ndarray, is_regression: bool, source: str) -> dict[str, Any]:
    """Agreement of ``got`` (ONNX outputs) with ``ref`` (PyTorch outputs), rows x outputs."""
    ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    got = np.asarray(got, dtype=np.float64).reshape(len(got), -1)
    if ref.shape != got.shape or len(ref) == 0:
        raise ParityError(f"cannot compare predictions of shapes {got.shape} (ONNX) and {ref.shape} (PyTorch)")
    doc: dict[str, Any] = {"source": source, "examples": len(ref)}
    if is_regression or ref.shape[1] == 1:
        r, g = ref[:, 0], got[:, 0]
        center = float(r.mean())
        doc.update(kind="sign", value=float((np.sign(r - center) == np.sign(g - center)).mean()))
        doc["correlation"] = float(np.corrcoef(r, g)[0, 1]) if r.std() > 0 and g.std() > 0 else None
    else:
        doc.update(kind="argmax", value=float((ref.argmax(-1) == got.argmax(-1)).mean()))
    return doc


def parity_agreement(cases: list[Any]) -> dict[str, Any] | None:
    """Argmax agreement over the parity sentences (no task given): the cases' agreements weighted by batch."""
    rows = sum(int(c.batch) for c in cases)
    if not rows:
        return None
    value = sum(float(c.argmax_agreement) * int(c.batch) for c in cases) / rows
    return {"source": "parity sentences", "examples": rows, "kind": "argmax", "value": value}


def judge_agreement(agreement: dict[str, Any] | None, precision: str,
                    min_agreement: float = DEFAULT_MIN_AGREEMENT) -> dict[str, Any] | None:  # fmt: skip
    """Add ``min_agreement``, ``judged`` and ``ok``; raise ``ParityError`` for a judged precision below it."""
    if agreement is None:
        return None
    judged = precision in JUDGED_PRECISIONS
    ok = float(agreement["value"]) >= min_agreement - 1e-12
    doc = {**agreement, "min_agreement": min_agreement, "judged": judged, "ok": ok}
    if judged and not ok:
        corr = f", correlation {agreement['correlation']:.3f}" if agreement.get("correlation") is not None else ""
        raise ParityError(
            f"the {precision} export agrees with PyTorch on {100 * float(agreement['value']):.1f}% of "
            f"{agreement['examples']} {agreement['source']} inputs ({agreement['kind']}{corr}) < --min-agreement "
            f"{100 * min_agreement:.1f}%"
        )
    return doc
