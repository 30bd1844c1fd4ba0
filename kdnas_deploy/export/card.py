"""Model cards: the ``README.md`` of a published student folder (Hugging Face) or ONNX folder.

The card follows the Hugging Face model-card layout (YAML front matter, then Markdown sections) so a folder
can be pushed to a hub as is. It is rendered from a plain dict of facts; a fact that is missing is left out
of the card, never guessed. Facts (all optional but ``format``):

``format`` ("hf" | "onnx"), ``name``, ``architecture`` (``num_layers``, ``hidden_size``, ``num_heads``,
``ffn_size``), ``params``, ``teacher``, ``task``, ``split``, ``metrics`` (name -> value), ``main_metric``,
``baseline`` (name -> value of the task's trivial baseline), ``retained_gain`` (name -> (student - baseline)
/ (teacher - baseline)), ``agreement`` (an export's prediction agreement with PyTorch), ``precision``,
``optimize``, ``parity``
(``max_abs_diff``, ``tolerance``), ``metric_check`` (an export's before/after check), ``latency``
(``median_ms``, ``p90_ms``, ``batch``, ``seq_len``, ``threads``, ``device``, ``kind``: measured | predicted),
``device`` (a one-line summary of the machine or table fingerprint).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from kdnas_deploy.io import atomic_write_text

CARD_FILE = "README.md"
ARCH_KEYS = (("L", "num_layers"), ("H", "hidden_size"), ("A", "num_heads"), ("F", "ffn_size"))
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
BACKBONE_HUB_IDS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}


def hub_id(name: Any) -> str | None:
    """``name`` as a hub id when it is one (``org/model``, not an existing local path), else None."""
    if not isinstance(name, str) or not name:
        return None
    if name in BACKBONE_HUB_IDS:
        return BACKBONE_HUB_IDS[name]
    if _HUB_ID.match(name) and not Path(name).expanduser().exists():
        return name
    return None


def _front_matter(facts: dict[str, Any]) -> dict[str, Any]:
    onnx = facts.get("format") == "onnx"
    tags = ["kdnas-deploy", "knowledge-distillation", "text-classification"] + (["onnx"] if onnx else [])
    meta: dict[str, Any] = {"library_name": "onnx" if onnx else "transformers", "tags": tags,
                            "pipeline_tag": "text-classification"}
    base = hub_id(facts.get("teacher"))
    if base:
        meta["base_model"] = base
    if facts.get("task"):
        meta["datasets"] = [str(facts["task"])]
    metrics = facts.get("metrics") or {}
    if facts.get("task") and metrics:
        meta["model-index"] = [{
            "name": str(facts.get("name") or "student"),
            "results": [{
                "task": {"type": "text-classification", "name": "Text Classification"},
                "dataset": {"name": str(facts["task"]), "type": str(facts["task"]),
                            "split": str(facts.get("split") or "dev")},
                "metrics": [{"type": k, "value": _num(v), "name": k} for k, v in metrics.items()],
            }],
        }]
    return meta


def _num(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _fmt(value: Any) -> str:
    v = _num(value)
    return f"{v:g}" if isinstance(v, float) else str(v)


def _architecture(facts: dict[str, Any]) -> list[str]:
    arch = facts.get("architecture") or {}
    rows = [f"| {short} ({key.replace('_', ' ')}) | {arch[key]} |" for short, key in ARCH_KEYS if key in arch]
    if facts.get("params") is not None:
        rows.append(f"| parameters | {int(facts['params']):,} |")
    for key in ("precision", "optimize"):
        if facts.get(key):
            rows.append(f"| {key} | {facts[key]} |")
    if not rows:
        return []
    return ["## Architecture", "", "BERT encoder, every layer the same shape.", "", "| | |", "|---|---|", *rows, ""]


def _training(facts: dict[str, Any]) -> list[str]:
    lines = []
    if facts.get("teacher"):
        lines.append(f"- Teacher: `{facts['teacher']}` (knowledge distillation with kdnas-deploy)")
    if facts.get("task"):
        lines.append(f"- Task: `{facts['task']}`")
    return ["## Teacher and task", "", *lines, ""] if lines else []


def _metrics(facts: dict[str, Any]) -> list[str]:
    metrics = facts.get("metrics") or {}
    baseline = facts.get("baseline") or {}
    lines: list[str] = []
    if metrics:
        split = facts.get("split") or "dev"
        head = "| metric | this model | trivial baseline |" if baseline else "| metric | this model |"
        lines += [f"Measured on the `{split}` split.", "", head, "|---|---|---|" if baseline else "|---|---|"]
        for k, v in metrics.items():
            main = " (main)" if k == facts.get("main_metric") else ""
            extra = f" {_fmt(baseline[k])} |" if baseline and k in baseline else (" |" if baseline else "")
            lines.append(f"| {k}{main} | {_fmt(v)} |{extra}")
        lines.append("")
    gains = {k: v for k, v in (facts.get("retained_gain") or {}).items() if v is not None}
    if gains:
        lines += ["Retained gain over the trivial baseline, (this model - baseline) / (teacher - baseline): "
                  + ", ".join(f"{k} {_fmt(v)}" for k, v in gains.items()) + ".", ""]
    agreement = facts.get("agreement") or {}
    if agreement.get("value") is not None:
        lines += [f"Prediction agreement with PyTorch ({agreement.get('kind', 'argmax')}) on "
                  f"{agreement.get('examples', '?')} {agreement.get('source', '')} inputs: "
                  f"{_fmt(100 * float(agreement['value']))}%.", ""]
    check = facts.get("metric_check") or {}
    if check.get("metric") is not None and check.get("after") is not None:
        lines += [f"Export check on {check.get('examples', '?')} dev examples of `{check.get('task', '?')}`: "
                  f"{check['metric']} {_fmt(check.get('before'))} (PyTorch) -> {_fmt(check['after'])} (ONNX).", ""]
    parity = facts.get("parity") or {}
    if parity.get("max_abs_diff") is not None:
        tol = parity.get("tolerance") or {}
        bound = ", ".join(f"{k} {v:g}" for k, v in tol.items()) if isinstance(tol, dict) else str(tol)
        bound = f" (tolerance {bound})" if bound else ""
        lines += [f"ONNX Runtime vs PyTorch logits: max |diff| {parity['max_abs_diff']:.3g}{bound}.", ""]
    return ["## Metrics", "", *lines] if lines else []


def _latency(facts: dict[str, Any]) -> list[str]:
    lat = facts.get("latency") or {}
    lines = []
    if lat.get("median_ms") is not None:
        kind = lat.get("kind", "measured")
        shape = ", ".join(f"{k} {lat[k]}" for k in ("batch", "seq_len", "threads", "device") if lat.get(k) is not None)
        p90 = f", p90 {_fmt(lat['p90_ms'])} ms" if lat.get("p90_ms") is not None else ""
        shape = f" ({shape})" if shape else ""
        what = "median " if kind == "measured" else ""
        lines.append(f"- {kind.capitalize()}: {what}{_fmt(lat['median_ms'])} ms{p90}{shape}")
    if facts.get("device"):
        lines.append(f"- Device: {facts['device']}")
    return ["## Latency", "", *lines, ""] if lines else []


def _usage(facts: dict[str, Any]) -> list[str]:
    if facts.get("format") == "onnx":
        load = ["from optimum.onnxruntime import ORTModelForSequenceClassification",
                "from transformers import AutoTokenizer", "",
                'model = ORTModelForSequenceClassification.from_pretrained("path/to/this/folder")']
    else:
        load = ["from transformers import AutoModelForSequenceClassification, AutoTokenizer", "",
                'model = AutoModelForSequenceClassification.from_pretrained("path/to/this/folder")']
    code = [*load, 'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
            'print(model(**tokenizer(["A fine film."], return_tensors="pt")).logits)']
    out = ["## How to use", "", "```python", *code, "```", ""]
    ov = facts.get("openvino")
    if isinstance(ov, dict):
        hint = (ov.get("config") or {}).get("INFERENCE_PRECISION_HINT", "f32")
        out += [f"The folder also holds the OpenVINO IR it was validated with ({ov.get('ir')}, inference "
                f"precision {hint}):", "", "```python", "import openvino as ov", "", "core = ov.Core()",
                f'model = core.compile_model(core.read_model("path/to/this/folder/{ov.get("ir")}"), "CPU",',
                f'                           {{"INFERENCE_PRECISION_HINT": "{hint}"}})', "```", ""]  # fmt: skip
    return out


def render_card(facts: dict[str, Any]) -> str:
    """The card's text: YAML front matter between ``---`` lines, then the Markdown sections."""
    meta = yaml.safe_dump(_front_matter(facts), sort_keys=False, allow_unicode=True).strip()
    kind = "ONNX" if facts.get("format") == "onnx" else "Hugging Face"
    title = str(facts.get("name") or "kdnas-deploy student")
    body = [f"# {title}", "", f"A text classifier ({kind} folder) distilled and exported by kdnas-deploy.", ""]
    for section in (_architecture, _training, _metrics, _latency, _usage):
        body += section(facts)
    return f"---\n{meta}\n---\n\n" + "\n".join(body).rstrip() + "\n"


def write_card(folder: str | Path, facts: dict[str, Any]) -> Path:
    """Write ``folder/README.md`` (atomically)."""
    return atomic_write_text(Path(folder) / CARD_FILE, render_card(facts))


def params_from_config(arch: Any, config: dict[str, Any]) -> int | None:
    """Parameter count of ``arch`` (an Architecture) with the vocabulary/positions/labels of an HF config."""
    try:
        kwargs = {k: int(config[c]) for k, c in (("vocab_size", "vocab_size"), ("max_positions",
                  "max_position_embeddings"), ("type_vocab", "type_vocab_size")) if c in config}  # fmt: skip
        labels = config.get("id2label")
        return int(arch.num_parameters(num_labels=len(labels) if labels else 2, **kwargs))
    except (TypeError, ValueError, AttributeError):
        return None
