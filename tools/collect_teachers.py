"""Collect the fine-tuning recipes tried for a task's teacher and the dev score each reached (issue 3).

Reads the ``teacher_record.json`` that ``kdnas-deploy teacher finetune`` writes into every teacher folder
(recipe, per-epoch dev metrics, best epoch) and writes one JSON table, best first:

    python -m tools.collect_teachers TEACHER_DIR... \\
        --target 0.90 --json tools/results/teacher_sst2_recipes.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from kdnas_deploy.io import atomic_write_json

SCHEMA_VERSION = 1
RECIPE_KEYS = ("epochs", "batch_size", "learning_rate", "max_seq_len", "seed", "warmup_ratio", "weight_decay")


def read_teacher(folder: Path) -> dict[str, Any]:
    path = folder / "teacher_record.json"
    if not path.is_file():
        raise click.UsageError(f"{folder} has no teacher_record.json (not a folder written by 'teacher finetune')")
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        metric = rec["task"]["main_metric"]
        history = rec["history"]
        best = max(h[metric] for h in history)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise click.UsageError(f"{path}: unreadable teacher record ({exc})") from None
    return {
        "folder": str(folder),
        "task": rec["task"]["name"],
        "base_model": rec.get("base_model"),
        "recipe": {k: rec["config"].get(k) for k in RECIPE_KEYS},
        "metric": metric,
        "per_epoch": [round(h[metric], 4) for h in history],
        "best": round(best, 4),
        "best_epoch": rec.get("best_epoch"),
    }


@click.command(help=__doc__)
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--target", type=float, default=None, help="Dev score the issue asks of the teacher.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(folders: tuple[Path, ...], target: float | None, json_out: Path) -> None:
    rows = sorted((read_teacher(f) for f in folders), key=lambda r: -r["best"])
    doc = {
        "schema_version": SCHEMA_VERSION,
        "updated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": target,
        "met": None if target is None else bool(rows and rows[0]["best"] >= target),
        "teachers": rows,
    }
    atomic_write_json(json_out, doc)
    for r in rows:
        rec = r["recipe"]
        click.echo(
            f"{r['best']:.4f}  {rec['epochs']:g} ep, lr {rec['learning_rate']:g}, len {rec['max_seq_len']},"
            f" seed {rec['seed']}  per epoch {r['per_epoch']}  {r['folder']}"
        )


if __name__ == "__main__":
    main()
