"""The run report: Markdown (``report.md``) and a self-contained HTML page (``report.html``, pictures
embedded) written into the run folder."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kdnas_deploy.io import atomic_write_text


@dataclass(frozen=True)
class ModelRow:
    """One model in the teacher-versus-student table."""

    name: str
    arch: str
    params_m: float
    metric_name: str
    metric: float | None
    predicted_ms: float | None
    measured_ms: float | None
    speedup: float | None = None


@dataclass(frozen=True)
class Report:
    title: str
    budgets: Sequence[tuple[str, float]]  # (device name, budget in ms)
    chosen_arch: str
    rows: Sequence[ModelRow]
    figures: Sequence[tuple[str, Path]] = ()  # (caption, PNG path)
    facts: Sequence[tuple[str, str]] = field(default_factory=tuple)  # extra (label, value) lines


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _table_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["model", "architecture", "params (M)", "metric", "predicted ms", "measured ms", "speedup"]
    body = [
        [
            r.name,
            r.arch,
            f"{r.params_m:.1f}",
            f"{r.metric_name} {_fmt(r.metric, 4)}",
            _fmt(r.predicted_ms),
            _fmt(r.measured_ms),
            _fmt(r.speedup, 2, "x"),
        ]
        for r in report.rows
    ]
    return header, body


def to_markdown(report: Report, base: Path) -> str:
    lines = [f"# {report.title}", ""]
    lines += ["- **Budget**: " + ", ".join(f"{n}: {ms:.2f} ms" for n, ms in report.budgets)]
    lines += [f"- **Chosen architecture**: `{report.chosen_arch}`"]
    lines += [f"- **{label}**: {value}" for label, value in report.facts]
    header, body = _table_rows(report)
    lines += ["", "## Teacher and student", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    for caption, path in report.figures:
        full = Path(path).resolve()
        rel = full.relative_to(base.resolve()) if full.is_relative_to(base.resolve()) else path
        lines += ["", f"## {caption}", "", f"![{caption}]({rel})"]
    return "\n".join(lines) + "\n"


def to_html(report: Report) -> str:
    esc = html.escape
    header, body = _table_rows(report)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(report.title)}</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child,td:nth-child(2){text-align:left}img{max-width:100%}</style>",
        "</head><body>",
        f"<h1>{esc(report.title)}</h1><ul>",
        "<li><b>Budget</b>: " + esc(", ".join(f"{n}: {ms:.2f} ms" for n, ms in report.budgets)) + "</li>",
        f"<li><b>Chosen architecture</b>: <code>{esc(report.chosen_arch)}</code></li>",
    ]
    parts += [f"<li><b>{esc(label)}</b>: {esc(value)}</li>" for label, value in report.facts]
    parts += ["</ul><h2>Teacher and student</h2><table><tr>"]
    parts += [f"<th>{esc(h)}</th>" for h in header] + ["</tr>"]
    for row in body:
        parts += ["<tr>"] + [f"<td>{esc(c)}</td>" for c in row] + ["</tr>"]
    parts += ["</table>"]
    for caption, path in report.figures:
        path = Path(path)
        if not path.is_file():
            parts += [f"<h2>{esc(caption)}</h2><p>(figure missing: {esc(str(path))})</p>"]
            continue
        data = base64.b64encode(path.read_bytes()).decode()
        parts += [f"<h2>{esc(caption)}</h2><img alt='{esc(caption)}' src='data:image/png;base64,{data}'>"]
    parts += ["</body></html>"]
    return "\n".join(parts)


def write_report(report: Report, run_dir: str | Path) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    md = atomic_write_text(run_dir / "report.md", to_markdown(report, run_dir))
    page = atomic_write_text(run_dir / "report.html", to_html(report))
    return md, page
