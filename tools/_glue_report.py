"""The GLUE table's Markdown and plot (``tools/bench_glue.py`` writes them beside its JSON)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

_XD = "https://huggingface.co/microsoft/xtremedistil-l6-h384-uncased (GLUE dev table)"
_ML12 = "https://huggingface.co/microsoft/MiniLM-L12-H384-uncased (GLUE dev table)"
# Published GLUE dev figures of 6-layer, hidden-384 (22M-parameter) students, for reference beside the table: the
# MiniLM 6x384 and XtremeDistil-l6-h384 rows of the XtremeDistil model card (task-agnostic distillation from a
# BERT-base-size teacher, then fine-tuned; the card does not say which MRPC/QQP metric it lists). Neither lists
# CoLA or STS-B; for CoLA only the 12-layer MiniLM's figure was found. Our teacher, all-MiniLM-L6-v2, is a
# sentence-embedding model of the same shape, not either of these checkpoints.
_SIX_LAYER = {"sst2": (0.913, 0.923), "mrpc": (0.866, 0.900), "mnli": (0.828, 0.854), "qnli": (0.903, 0.903),
              "qqp": (0.906, 0.910), "rte": (0.689, 0.809)}  # (MiniLM 6x384, XtremeDistil-l6-h384)
PUBLISHED: dict[str, list[dict[str, Any]]] = {
    **{task: [{"model": "MiniLM 6x384", "value": minilm, "source": _XD},
              {"model": "XtremeDistil-l6-h384", "value": xd, "source": _XD}]
       for task, (minilm, xd) in _SIX_LAYER.items()},
    "cola": [{"model": "MiniLM 12x384 (12 layers: no 6-layer figure found)", "value": 0.585, "source": _ML12}],
}  # fmt: skip


def published_lines(tasks: list[str]) -> list[str]:
    """The Markdown section of :data:`PUBLISHED` for ``tasks`` (a task without a figure says so)."""
    lines = ["", "Published GLUE dev figures of 6-layer H384 (22M) students, for reference (teacher: ours, below):",
             "", "| task | model | value | source |", "|---|---|---|---|"]
    for task in tasks:
        for p in PUBLISHED.get(task) or [{"model": "none found", "value": None, "source": "-"}]:
            value = "-" if p["value"] is None else f"{p['value']:.3f}"
            lines.append(f"| {task} | {p['model']} | {value} | {p['source']} |")
    return lines


def students(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows that have students (a stopped task has none)."""
    return {task: r for task, r in rows.items() if "stopped" not in r}


def markdown(rows: dict[str, dict[str, Any]], avg: dict[str, Any]) -> str:
    lines = ["| task | metric | baseline | model | value | params | pred ms | meas ms | x ONNX teacher | "
             "x PyTorch teacher | retained | retained gain |", "|" + "---|" * 12]
    for task, r in rows.items():
        if "stopped" in r:
            base = "-" if r["baseline"] is None else f"{r['baseline']:.4f}"
            lines.append(f"| {task} | {r['metric']} | {base} | stopped | {r['stopped']} |" + " |" * 7)
            continue
        for name, m in r["models"].items():
            value = m["metrics"].get(r["metric"])
            shown_value = "-" if value is None else f"{value:.4f}"
            runtime = f" ({m['runtime']})" if m.get("runtime") else ""
            lines.append(f"| {task} | {r['metric']} | {r['baseline']:.4f} | {name}{runtime} | {shown_value} | "
                         f"{m['params'] / 1e6:.1f}M | {m['predicted_ms']} | {m['measured_ms']:.3f} | "
                         f"{m['speedup_vs_onnx_teacher']} | {m['speedup_vs_pytorch_teacher']} | {m['retained']} | "
                         f"{m['retained_gain']} |")  # fmt: skip
        if "int8_stopped" in r:
            lines.append(f"| {task} | {r['metric']} | {r['baseline']:.4f} | kdnas_int8 | stopped | "
                         f"{r['int8_stopped']} |" + " |" * 6)  # fmt: skip
    for name in ("hand", "kdnas_fp32", "kdnas_int8"):
        a = avg[name]
        lines.append(f"| GLUE average | | | {name} | | | | | {a['speedup_vs_onnx_teacher']} | "
                     f"{a['speedup_vs_pytorch_teacher']} | {a['retained']} | {a['retained_gain']} |")
    lines += ["", "x ONNX teacher: the median over the bench's interleaved rounds of (teacher ms / model ms) in the "
              "same round (`speedup_vs_onnx_teacher_p10_p90` in the JSON gives the spread; rows benched before "
              "2026-12-07 08:00 UTC: teacher median / model median)."]
    lines += published_lines(list(rows))
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict[str, Any]], path: Path) -> None:
    rows = students(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, marker in (("hand", "s"), ("kdnas_fp32", "o"), ("kdnas_int8", "^")):
        have = {task: r["models"][name] for task, r in rows.items() if name in r["models"]}
        xs = [m["speedup_vs_onnx_teacher"] or math.nan for m in have.values()]
        ys = [m["retained"] or math.nan for m in have.values()]
        if not have:
            continue
        ax.scatter(xs, ys, marker=marker, label=name)
        for x, y, task in zip(xs, ys, have, strict=True):
            ax.annotate(task, (x, y), fontsize=7)
    ax.set_xlabel("measured speedup over the fp32 ONNX teacher")
    ax.set_ylabel("retained ratio of the teacher's main metric")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
