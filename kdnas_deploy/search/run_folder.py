"""The run folder of a search: creating it, the ``--resume`` check of its stored configuration, its records.

``RUN_DIR/config.yaml`` holds the resolved configuration; ``--resume`` compares the stored one with the new
one field by field and refuses a folder whose search differs (settings of strategies the run does not use and
:data:`FINAL_STAGE_SETTINGS` aside). Nothing here deletes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import SearchError
from kdnas_deploy.io import FolderLock, atomic_write_yaml, is_empty_dir, read_jsonl
from kdnas_deploy.search.config import ADDED_SETTINGS, config_diff

RUN_SCHEMA_VERSION = 1
# Settings that --resume may change: they pick how many of the finished candidates are distilled fully.
# settings that only say what happens after the candidates are recorded (how many finalists; what a degenerate
# search does): a run folder resumes with other values
FINAL_STAGE_SETTINGS = ("final_top", "on_degenerate")
CONFIG_FILE = "config.yaml"
CANDIDATES_FILE = "candidates.jsonl"
EPISODES_FILE = "episodes.jsonl"
# candidates re-evaluated at a raised proxy budget after a degenerate search (same record format as
# candidates.jsonl, plus proxy_round 1); a separate file, so readers of candidates.jsonl see the search alone
ESCALATED_FILE = "escalated.jsonl"


def record_key(arch_dict: dict[str, int]) -> Architecture:
    return Architecture.from_dict(arch_dict)


def open_run_folder(
    run_dir: Path, doc: dict[str, Any], resume: bool, unused: Sequence[str], echo: Callable[[str], None]
) -> FolderLock:
    """Create the run folder with ``doc`` as its ``config.yaml``, or check the stored one when resuming.
    Returns the folder's lock, held (a second process on the same folder gets a one-line BusyError); the
    caller releases it when the run ends. A refused folder gets no lock file."""
    cfg_path = run_dir / CONFIG_FILE
    if run_dir.exists() and not run_dir.is_dir():
        raise SearchError(f"--out {run_dir} is a file, not a folder")
    non_empty = not is_empty_dir(run_dir)
    if non_empty and not resume:
        raise SearchError(f"run folder {run_dir} is not empty: pass --resume to continue it, or choose another --out")
    if non_empty and not cfg_path.is_file():
        raise SearchError(f"cannot resume {run_dir}: it has no {CONFIG_FILE}, so it is not a search run folder")
    lock = FolderLock(run_dir).acquire()
    try:
        if not non_empty:
            atomic_write_yaml(cfg_path, doc)
        else:
            _check_resume(run_dir, cfg_path, doc, unused, echo)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_resume(
    run_dir: Path, cfg_path: Path, doc: dict[str, Any], unused: Sequence[str], echo: Callable[[str], None]
) -> None:
    """Refuse to resume a folder made with another configuration; record changed final-stage settings."""
    old = _stored_config(run_dir, cfg_path)
    # settings of a strategy this run does not use (the controller of a random search) cannot matter;
    # FINAL_STAGE_SETTINGS only say how many finished candidates get the full distillation
    old_search, new_search = {**ADDED_SETTINGS, **old.get("search", {})}, doc["search"]
    skip = (*unused, *FINAL_STAGE_SETTINGS)
    diffs = config_diff(_without(old_search, skip), _without(new_search, skip))
    if old.get("space", {}).get("choices") != _yaml_round(doc["space"]).get("choices"):
        diffs.append("space choices differ")
    if diffs:
        raise SearchError(
            f"cannot resume {run_dir}: it was made with a different configuration"
            f" ({'; '.join(diffs[:6])}{'; ...' if len(diffs) > 6 else ''}); use a new --out"
        )
    final = {k: new_search[k] for k in FINAL_STAGE_SETTINGS if k in new_search}
    changed = config_diff({k: old_search.get(k) for k in final}, final)
    if changed:  # the stored configuration says what the folder now holds
        echo(f"resume: {'; '.join(changed)} (the search itself is unchanged)")
        atomic_write_yaml(cfg_path, {**old, "search": {**old_search, **final}})


def _stored_config(run_dir: Path, cfg_path: Path) -> dict[str, Any]:
    import yaml

    if not cfg_path.is_file():
        raise SearchError(f"cannot resume {run_dir}: it has no {CONFIG_FILE}, so it is not a search run folder")
    try:
        return yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        raise SearchError(f"cannot resume {run_dir}: {CONFIG_FILE} is not valid YAML") from None


def load_records(run_dir: Path, name: str = CANDIDATES_FILE) -> list[dict[str, Any]]:
    """The finished candidates of ``candidates.jsonl`` (or ``name``), one per architecture (foreign lines
    skipped)."""
    seen: set[Architecture] = set()
    out = []
    for rec in read_jsonl(run_dir / name):
        try:
            arch = record_key(rec["arch"])
        except Exception:  # noqa: BLE001 - a foreign line is skipped, not fatal
            continue
        if arch not in seen:
            seen.add(arch)
            out.append(rec)
    return out


def stored_proposals(run_dir: Path) -> dict[int, list[dict[str, Any]]]:
    """Proposals already written to ``episodes.jsonl``, by episode."""
    stored: dict[int, list[dict[str, Any]]] = {}
    for row in read_jsonl(run_dir / EPISODES_FILE):
        stored.setdefault(int(row["episode"]), row["proposals"])
    return stored


def _without(settings: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in keys}


def _yaml_round(doc: dict[str, Any]) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(yaml.safe_dump(doc))
