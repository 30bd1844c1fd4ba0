"""Stage bookkeeping for ``run``: a stage whose inputs have not changed is not run again.

Each stage writes ``RUN_DIR/stages/<name>.json`` (atomically, after its artifact is complete) holding the
hash of its inputs and what it produced. A rerun with the same inputs reuses the record; a killed run
resumes at the first stage without a matching record.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from kdnas_deploy.io import atomic_write_json

STAGE_SCHEMA_VERSION = 1


def inputs_key(inputs: dict[str, Any]) -> str:
    """A stable hash of a stage's inputs (JSON-canonical)."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class StageResult:
    name: str
    key: str
    outputs: dict[str, Any]
    seconds: float
    cached: bool


class StageRunner:
    """Runs named stages in a run folder, skipping those whose inputs' key matches a finished record."""

    def __init__(self, run_dir: str | Path, echo: Callable[[str], None] = click.echo) -> None:
        self.run_dir = Path(run_dir)
        self.stage_dir = self.run_dir / "stages"
        self.echo = echo
        self.results: dict[str, StageResult] = {}

    def record_path(self, name: str) -> Path:
        return self.stage_dir / f"{name}.json"

    def cached(self, name: str, key: str) -> dict[str, Any] | None:
        path = self.record_path(name)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if record.get("key") != key:
            return None
        outputs = record.get("outputs", {})
        for value in outputs.values():
            if isinstance(value, str) and value.startswith(str(self.run_dir)) and not Path(value).exists():
                return None
        return record

    def run(self, name: str, inputs: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> StageResult:
        key = inputs_key(inputs)
        record = self.cached(name, key)
        if record is not None:
            self.echo(f"[{name}] up to date (inputs unchanged), reusing {self.record_path(name)}")
            result = StageResult(name, key, record["outputs"], float(record.get("seconds", 0.0)), True)
        else:
            self.echo(f"[{name}] running ...")
            start = time.perf_counter()
            outputs = fn()
            seconds = time.perf_counter() - start
            atomic_write_json(
                self.record_path(name),
                {
                    "schema_version": STAGE_SCHEMA_VERSION,
                    "stage": name,
                    "key": key,
                    "inputs": json.loads(json.dumps(inputs, default=str)),
                    "outputs": outputs,
                    "seconds": round(seconds, 3),
                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
            self.echo(f"[{name}] done in {seconds:.1f} s")
            result = StageResult(name, key, outputs, seconds, False)
        self.results[name] = result
        return result
