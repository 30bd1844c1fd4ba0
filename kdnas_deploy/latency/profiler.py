"""``latency build``: profile every layer variant of a space in context and write a table.

For each variant and each anchor depth (:func:`scheme.anchor_depths`) a whole student is sent through the
backend's deployed path once; then all of them are measured at every (batch, seq) grid point by
:class:`measure.Measurer` (readings spaced in time, probe, state detection). Every finished reading is
appended to a journal in the work folder, so an interrupted build resumes from what it already measured;
the table is written atomically only at the end.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import TableError
from kdnas_deploy.io import append_jsonl, make_dirs, read_jsonl
from kdnas_deploy.latency.backends import Backend
from kdnas_deploy.latency.measure import LARGE_PROBE_ARCH, PROBE_ARCH, Job, MeasurePolicy, Measurer, Reading
from kdnas_deploy.latency.scheme import SCHEME_NAME, anchor_depths
from kdnas_deploy.latency.table import TABLE_KIND, TABLE_SCHEMA_VERSION, LatencyTable
from kdnas_deploy.space import SearchSpace

JOURNAL = "journal.jsonl"


def entry_key(variant: tuple[int, int, int], depth: int, batch: int, seq: int) -> str:
    h, a, f = variant
    return f"H{h}-A{a}-F{f}-L{depth}-b{batch}-s{seq}"


def model_dirname(arch: Architecture) -> str:
    return f"H{arch.hidden_size}-A{arch.num_heads}-F{arch.ffn_size}-L{arch.num_layers}"


def _build_identity(space: SearchSpace, backend: Backend, batches: Sequence[int], seqs: Sequence[int],
                    policy: MeasurePolicy, seed: int) -> dict[str, Any]:  # fmt: skip
    return {
        "space_fingerprint": space.fingerprint,
        "backend": backend.name,
        "precision": backend.precision,
        "threads": backend.threads,
        "path": backend.path_config(),
        "batch_sizes": list(batches),
        "seq_lens": list(seqs),
        "policy": policy.to_dict(),
        "seed": seed,
    }


def default_workdir(out: Path, identity: dict[str, Any]) -> Path:
    digest = hashlib.sha256((str(out.resolve()) + json.dumps(identity, sort_keys=True)).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "kdnas-latency" / f"{out.stem}-{digest}"


def _tqdm(**kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(dynamic_ncols=True, **kwargs)


def validate_grid(batches: Sequence[int], seqs: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    b = tuple(sorted({int(x) for x in batches}))
    s = tuple(sorted({int(x) for x in seqs}))
    if not b or not s:
        raise TableError("the grid needs at least one batch size and one sequence length")
    if min(b) < 1 or min(s) < 1:
        raise TableError(f"batch sizes and sequence lengths must be positive (got batch {list(b)}, seq {list(s)})")
    if max(s) > 512:
        raise TableError(f"sequence length {max(s)} exceeds BERT's 512 positions")
    return b, s


@dataclass
class _Journal:
    """What an earlier, interrupted run of the same build left in the work folder's journal."""

    path: Path
    readings: list[Reading] = field(default_factory=list)
    probes: list[tuple[float, float]] = field(default_factory=list)
    large: list[tuple[float, float, float]] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def open(cls, work: Path, identity: dict[str, Any], log: Callable[[str], None]) -> _Journal:
        path = work / JOURNAL
        records = read_jsonl(path)
        if records and records[0].get("identity") != identity:
            log(f"work folder {work} belongs to a different build; starting afresh")
            path.unlink()
            records = []
        if not records:
            append_jsonl(path, {"type": "header", "identity": identity, "started_at": _now()})
        probes = [r for r in records if r.get("type") == "probe"]
        journal = cls(
            path,
            readings=[Reading.from_dict(r["reading"]) for r in records if r.get("type") == "reading"],
            probes=[(r["t"], r["ms"]) for r in probes if r.get("which", "small") == "small"],
            large=[(r["t"], r["ms"], r["small"]) for r in probes if r.get("which") == "large"],
            seconds=sum(r.get("seconds", 0.0) for r in records if r.get("type") == "session"),
        )
        if journal.readings:
            log(f"resuming: {len(journal.readings)} reading(s) already in {path}")
        return journal

    def reading(self, r: Reading) -> None:
        append_jsonl(self.path, {"type": "reading", "reading": r.to_dict()})

    def probe(self, t: float, ms: float, which: str, small: float | None) -> None:
        append_jsonl(self.path, {"type": "probe", "which": which, "t": t, "ms": ms, "small": small})


def refuse_foreign_out(out: Path, identity: dict[str, Any], force: bool) -> None:
    """Without ``force``, refuse an ``out`` that holds anything but this build's own table (same space,
    backend and precision), before anything is written."""
    if force or not out.exists() or (out.is_file() and out.stat().st_size == 0):
        return
    from kdnas_deploy.errors import OutputExistsError

    if out.is_dir():
        raise OutputExistsError(f"--out {out} is a folder; the table is a JSON file")
    try:
        doc = json.loads(out.read_text(encoding="utf-8"))
        mine = all(doc.get(k) == identity[k] for k in ("space_fingerprint", "backend", "precision"))
    except (OSError, ValueError, AttributeError):
        mine = False
    if not mine:
        raise OutputExistsError(f"--out {out} already exists and is not this build's table (use --force to "
                                "replace it)")  # fmt: skip


def build_table(
    space: SearchSpace,
    backend: Backend,
    batches: Sequence[int],
    seqs: Sequence[int],
    out: str | Path,
    policy: MeasurePolicy | None = None,
    workdir: str | Path | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
    progress: bool = True,
    keep_models: bool = False,
    export_workers: int = 0,
    force: bool = False,
) -> LatencyTable:
    """Profile ``space`` on ``backend`` and write the table to ``out`` (atomically). Resumable. An existing
    ``out`` that is not this build's own table is refused unless ``force``."""
    t_start = time.time()
    out = Path(out)
    policy = policy or MeasurePolicy()
    batches, seqs = validate_grid(batches, seqs)
    identity = _build_identity(space, backend, batches, seqs, policy, seed)
    refuse_foreign_out(out, identity, force)
    make_dirs(out.parent)  # before any measurement: a folder that cannot be created is refused with nothing done
    work = Path(workdir) if workdir else default_workdir(out, identity)
    make_dirs(work)
    journal = _Journal.open(work, identity, log)

    anchors = anchor_depths(space.layers)
    models = [Architecture(d, h, a, f) for (h, a, f) in space.variants for d in anchors]
    todo = [(PROBE_ARCH, work / "models" / "probe"), (LARGE_PROBE_ARCH, work / "models" / "probe-large")]
    todo += [(a, work / "models" / model_dirname(a)) for a in models]
    paths = prepare_all(backend, todo, seed, export_workers, progress)
    artifacts = {model_dirname(a): p for a, p in zip(models, paths[2:], strict=True)}
    jobs = [
        Job(entry_key(arch.variant, arch.num_layers, b, s), artifacts[model_dirname(arch)], b, s)
        for b in batches for s in seqs for arch in models
    ]  # fmt: skip
    wanted = {j.key for j in jobs}
    prior = [r for r in journal.readings if r.key in wanted]
    done_readings = sum(min(len([r for r in prior if r.key == j.key]), policy.rounds) for j in jobs)
    mbar = _tqdm(total=len(jobs) * policy.rounds - done_readings, desc="measure", unit="reading", disable=not progress)

    def say(msg: str) -> None:
        mbar.write(msg) if progress else log(msg)

    measurer = Measurer(backend, paths[0], policy, log=say, on_reading=journal.reading, on_probe=journal.probe,
                        progress=mbar, large_probe_artifact=paths[1])  # fmt: skip
    measurer.add_prior(prior, journal.probes, journal.large)
    results = measurer.run(jobs)
    mbar.close()
    seconds = time.time() - t_start
    append_jsonl(journal.path, {"type": "session", "seconds": seconds})
    entries = [
        {**arch.to_dict(), "batch": b, "seq": s, **results[entry_key(arch.variant, arch.num_layers, b, s)].to_dict()}
        for arch in models for b in batches for s in seqs
    ]  # fmt: skip
    unsettled = sum(e["state"] != "fast" for e in entries)
    if unsettled:
        log(f"warning: {unsettled} entr{'y' if unsettled == 1 else 'ies'} never got a fast, quiet reading "
            "(kept the best reading; consider rebuilding on a quieter machine)")  # fmt: skip
    measurement = {"policy": policy.to_dict(), "seed": seed, "build_seconds": round(seconds + journal.seconds, 2),
                   "resumed": bool(prior), "unsettled_entries": unsettled, "state_changes": measurer.state_changes}
    data = _table_data(space, backend, batches, seqs, anchors, entries, measurement, measurer.probe_summary())
    table = LatencyTable.from_dict(data, source=str(out))
    table.save(out)
    if not keep_models:
        shutil.rmtree(work, ignore_errors=True)
    return table


def _table_data(space: SearchSpace, backend: Backend, batches: Sequence[int], seqs: Sequence[int],
                anchors: Sequence[int], entries: list[dict[str, Any]], measurement: dict[str, Any],
                probe: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    return {
        "schema_version": TABLE_SCHEMA_VERSION,
        "kind": TABLE_KIND,
        "created_at": _now(),
        "space": space.to_dict(),
        "space_fingerprint": space.fingerprint,
        "device": backend.device,
        "backend": backend.name,
        "precision": backend.precision,
        "batch_sizes": list(batches),
        "seq_lens": list(seqs),
        "units": {"latency": "ms", "spread": "percent of median (p90 - p10)"},
        "fingerprint": backend.fingerprint(),
        "scheme": {
            "name": SCHEME_NAME,
            "anchor_depths": list(anchors),
            "description": "whole deployed models at the anchor depths; piecewise-linear in depth between them",
        },
        "measurement": measurement,
        "probe": probe,
        "calibration": {"scale": 1.0, "probe_ms": None, "history": []},
        "entries": entries,
    }


def _prepare_one(backend_args: tuple[str, str, int, str], arch: dict[str, int], workdir: str, seed: int) -> str:
    """Worker: rebuild the backend in this process and send one architecture through its deployed path."""
    from kdnas_deploy.latency.backends import get_backend

    device, precision, threads, name = backend_args
    backend = get_backend(device, precision, threads=threads, backend=name)
    return str(backend.prepare(Architecture.from_dict(arch), Path(workdir), seed=seed))


def prepare_all(backend: Backend, todo: Sequence[tuple[Architecture, Path]], seed: int, workers: int,
                progress: bool) -> list[Path]:  # fmt: skip
    """Export every model: in this process (``workers=0``) or in ``workers`` spawned processes.

    A worker process keeps the exporter's memory (torch, optimum, protobuf copies) out of the process that
    times, and gives it back when the export phase ends. Exports happen before any timing, never alongside it.
    """
    bar = _tqdm(total=len(todo), desc="export", unit="model", disable=not progress)
    try:
        if workers <= 0:
            out = []
            for arch, path in todo:
                out.append(backend.prepare(arch, path, seed=seed))
                bar.update(1)
            return out
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        args = (backend.device, backend.precision, backend.threads, backend.name)
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_prepare_one, args, a.to_dict(), str(p), seed) for a, p in todo]
            for fut in futures:
                fut.add_done_callback(lambda _f: bar.update(1))
            return [Path(f.result()) for f in futures]
    finally:
        bar.close()
        settle_after_exports()


def settle_after_exports() -> None:
    """Flush the freshly written models to disk before timing starts.

    The exports write hundreds of MB to GBs. Observed here: the first reading of every model ran ~5% above
    its later readings; kernel write-back of those files during the first pass is the likely cause, so it
    is done before timing starts (a cheap precaution, not a measured fix).
    """
    import os

    if hasattr(os, "sync"):
        os.sync()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
