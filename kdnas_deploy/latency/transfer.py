"""``latency transfer``: a table for this machine from a reference table and K whole models measured here.

The K models are chosen to span the reference's cost structure (layer variants spread over its per-layer
cost quantiles, depths alternating between the space's smallest and largest) and measured with the build's
own machinery (:class:`measure.Measurer`: readings spaced in time, the probes, min of fast-state readings).
A correction of the reference is fitted and chosen by leave-one-out error (:mod:`transfer_fit`), the
reference's entries are corrected, and a normal table is written (atomically, only once everything
succeeded) with this machine's fingerprint and probes, plus ``derived_from`` (the reference's fingerprint and
sha256) and ``transfer`` (the correction chosen, every candidate's LOO error, the K measured points).
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import TableError
from kdnas_deploy.latency.backends import Backend
from kdnas_deploy.latency.measure import LARGE_PROBE_ARCH, PROBE_ARCH, Job, MeasurePolicy, Measurer
from kdnas_deploy.latency.profiler import prepare_all
from kdnas_deploy.latency.stats import measurement_seconds
from kdnas_deploy.latency.table import LatencyTable
from kdnas_deploy.latency.transfer_fit import Features, apply_correction, select_correction
from kdnas_deploy.space import SearchSpace

DEFAULT_K = 10


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_reference(ref: LatencyTable, backend: Backend, space: SearchSpace | None, k: int) -> None:
    """TableError (one line) when ``ref`` cannot be transferred to ``backend`` with ``k`` models."""
    if ref.device != backend.device:
        raise TableError(f"cannot transfer {ref.source}: it is a {ref.device} table and the target is "
                         f"{backend.device} ({backend.name}); build a {backend.device} table instead")  # fmt: skip
    if ref.backend != backend.name:
        raise TableError(f"{ref.source} was measured with backend {ref.backend}, the target is {backend.name}")
    if ref.precision != backend.precision:
        raise TableError(f"{ref.source} is a {ref.precision} table, the target precision is {backend.precision}")
    want = {key: ref.fingerprint.get(key) for key in backend.path_config()}
    if want != backend.path_config():
        raise TableError(f"{ref.source} was measured through {want}, this build uses {backend.path_config()}")
    if space is not None and space.fingerprint != ref.space.fingerprint:
        raise TableError(f"{ref.source} is a table of space {ref.space.name!r}, not of the space asked "
                         f"({space.name!r}); transfer needs a reference of the same space")  # fmt: skip
    if k < 2:
        raise TableError(f"--measure must be at least 2 (a correction needs two measured models), got {k}")
    if k > len(ref.space):
        raise TableError(f"--measure {k} exceeds the {len(ref.space)} architectures of space {ref.space.name!r}")


def fixed_costs(ref: LatencyTable) -> np.ndarray:
    """Fixed cost (ms) per ``[variant, batch, seq]``: the first depth segment extrapolated to zero layers."""
    arr, a = ref._array, ref.anchors
    if len(a) < 2:
        return np.zeros(arr.shape[:3])
    slope = (arr[..., 1] - arr[..., 0]) / (a[1] - a[0])
    return arr[..., 0] - a[0] * slope


def unit_costs(ref: LatencyTable) -> np.ndarray:
    """Per-layer cost (ms) per ``[variant, batch, seq]``: from the smallest to the largest anchor depth."""
    arr, a = ref._array, ref.anchors
    if len(a) < 2:
        return arr[..., 0].copy()
    return (arr[..., -1] - arr[..., 0]) / (a[-1] - a[0])


def point_features(ref: LatencyTable, archs: Sequence[Architecture], batch: int, seq: int) -> Features:
    rows, depths = ref.indices(archs)
    whole = ref.predict_indices(rows, depths, batch, seq, calibrated=False)
    grid = (rows, ref.batch_sizes.index(batch), ref.seq_lens.index(seq))
    return Features(whole, fixed_costs(ref)[grid], np.array([a.hidden_size for a in archs], dtype=int),
                    unit_costs(ref)[grid])  # fmt: skip


def entry_features(ref: LatencyTable, entries: Sequence[dict[str, Any]]) -> Features:
    fixed, unit = fixed_costs(ref), unit_costs(ref)
    vi = {v: i for i, v in enumerate(ref.space.variants)}
    idx = [(vi[(e["hidden_size"], e["num_heads"], e["ffn_size"])], ref.batch_sizes.index(int(e["batch"])),
            ref.seq_lens.index(int(e["seq"]))) for e in entries]  # fmt: skip
    return Features(np.array([float(e["latency_ms"]) for e in entries]),
                    np.array([fixed[i] for i in idx]), np.array([int(e["hidden_size"]) for e in entries]),
                    np.array([unit[i] for i in idx]))  # fmt: skip


def choose_models(ref: LatencyTable, k: int, batch: int, seq: int) -> list[Architecture]:
    """K distinct architectures spanning the reference's cost structure (see module doc).

    Variants are ranked by the reference's per-layer cost; the i-th pick targets the variant at quantile
    ``i / (K - 1)`` and alternates between the smallest and largest depth; a target already taken moves to
    the nearest unused (variant rank, depth) pair. Then every hidden size gets at least one model (when K
    allows), replacing picks of the most represented hidden size.
    """
    space = ref.space
    variants = list(space.variants)
    lo, hi = min(space.layers), max(space.layers)
    rows = np.arange(len(variants))
    cost_hi = ref.predict_indices(rows, np.full(len(rows), float(hi)), batch, seq, calibrated=False)
    cost_lo = ref.predict_indices(rows, np.full(len(rows), float(lo)), batch, seq, calibrated=False)
    per_layer = (cost_hi - cost_lo) / max(hi - lo, 1) if hi > lo else cost_hi
    rank = {variants[int(i)]: r for r, i in enumerate(np.argsort(per_layer, kind="stable"))}
    members = list(space.members)
    taken: set[Architecture] = set()
    out: list[Architecture] = []
    span = max(hi - lo, 1)
    for i in range(k):
        target_rank = round(i * (len(variants) - 1) / max(k - 1, 1))
        target_depth = lo if i % 2 == 0 else hi

        def distance(a: Architecture, tr: int = target_rank, td: int = target_depth) -> tuple[float, int]:
            return abs(rank[a.variant] - tr) + abs(a.num_layers - td) / (span + 1), rank[a.variant]

        pick = min((a for a in members if a not in taken), key=distance)
        taken.add(pick)
        out.append(pick)
    return _cover_hidden(out, members, rank)


def _cover_hidden(picks: list[Architecture], members: Sequence[Architecture],
                  rank: dict[tuple[int, int, int], int]) -> list[Architecture]:  # fmt: skip
    hiddens = sorted({a.hidden_size for a in members})
    if len(picks) < len(hiddens):
        return picks
    picks = list(picks)
    for h in hiddens:
        if any(a.hidden_size == h for a in picks):
            continue
        counts = {x: sum(a.hidden_size == x for a in picks) for x in hiddens}
        crowded = max(counts, key=lambda x: counts[x])
        pool = [a for a in members if a.hidden_size == h and a not in picks]
        j, new = min(((j, c) for j, a in enumerate(picks) if a.hidden_size == crowded for c in pool),
                     key=lambda jc: (abs(rank[jc[1].variant] - rank[picks[jc[0]].variant])
                                     + (jc[1].num_layers != picks[jc[0]].num_layers)))  # fmt: skip
        picks[j] = new
    return picks


def measure_models(
    backend: Backend, archs: Sequence[Architecture], batch: int, seq: int, policy: MeasurePolicy, seed: int,
    log: Callable[[str], None], progress: bool, export_workers: int,
) -> tuple[list[Any], dict[str, Any], Measurer]:  # fmt: skip
    """The probes and ``archs`` measured as a build measures its entries (min of fast-state readings)."""
    count = SimpleNamespace(total=len(archs) * policy.rounds, n=0, update=lambda k: None, refresh=lambda: None)
    t0 = time.time()

    def on_reading(r: Any) -> None:  # the Measurer raises count.total when it adds re-measure passes
        count.n += 1
        if progress:
            eta = (time.time() - t0) / count.n * max(count.total - count.n, 0)
            log(f"  [{count.n}/{count.total}] {r.key} {r.median_ms:.3f} ms (about {eta:.0f} s left)")

    with tempfile.TemporaryDirectory(prefix="kdnas-transfer-") as tmp:
        work = Path(tmp)
        todo = [(PROBE_ARCH, work / "probe"), (LARGE_PROBE_ARCH, work / "probe-large")]
        todo += [(a, work / f"m{i}") for i, a in enumerate(archs)]
        if progress:
            log(f"exporting {len(todo)} models (2 probes + {len(archs)}) through the deployed path ...")
        paths = prepare_all(backend, todo, seed, export_workers, progress=False)
        t0 = time.time()
        jobs = [Job(f"{i}:{a.short()}", p, batch, seq) for i, (a, p) in enumerate(zip(archs, paths[2:], strict=True))]
        measurer = Measurer(backend, paths[0], policy, log=log, on_reading=on_reading, progress=count,
                            large_probe_artifact=paths[1])  # fmt: skip
        results = measurer.run(jobs)
    return [results[j.key] for j in jobs], measurer.probe_summary(), measurer


def transfer_table(
    ref_table: str | Path,
    backend: Backend,
    k: int = DEFAULT_K,
    out: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    space: SearchSpace | None = None,
    policy: MeasurePolicy | None = None,
    force: bool = False,
    export_workers: int = 1,
    measure: Callable[..., tuple[list[Any], dict[str, Any], Measurer]] | None = None,
) -> LatencyTable:
    """Transfer ``ref_table`` to ``backend`` on this machine from ``k`` measured models; write ``out``."""
    from kdnas_deploy.latency.validate import policy_from_table

    t_start = time.time()
    ref_path = Path(ref_table)
    ref = LatencyTable.load(ref_path)
    check_reference(ref, backend, space, k)
    if out is not None:
        out = Path(out)
        if out.exists() and out.resolve() == ref_path.resolve():
            raise TableError(f"--out {out} is the reference table itself; write the transferred table elsewhere")
        if out.exists() and not force:
            raise TableError(f"{out} already exists (use --force to replace it)")
    digest = file_sha256(ref_path)
    policy = policy or policy_from_table(ref)
    batch, seq = ref.batch_sizes[0], ref.seq_lens[0]
    archs = choose_models(ref, k, batch, seq)
    if progress:
        log(f"transfer {ref_path.name} -> {backend.name} {backend.precision} {backend.threads} thread(s): measuring "
            f"the probes and {k} models, about {measurement_seconds(ref, k):.0f} s")  # fmt: skip
    results, probe, measurer = (measure or measure_models)(
        backend, archs, batch, seq, policy, seed, log, progress, export_workers
    )
    measured = np.array([r.latency_ms for r in results], dtype=float)
    feats = point_features(ref, archs, batch, seq)
    sel, corrected = _fit(ref, feats, measured)
    seconds = time.time() - t_start
    data = _transferred_data(ref, backend, corrected, probe, policy, seed, seconds, k, measurer)
    data["derived_from"] = {
        "table": ref_path.name, "sha256": digest, "fingerprint": ref.fingerprint,
        "created_at": ref.data.get("created_at"), "probe_ms": ref.probe_ms,
    }  # fmt: skip
    data["transfer"] = _transfer_record(sel, archs, feats, measured, results, batch, seq, seconds)
    table = LatencyTable.from_dict(data, source=str(out) if out is not None else "transferred table")
    if out is not None:
        table.save(out)
    return table


def _fit(ref: LatencyTable, feats: Features, measured: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """The chosen correction of ``ref`` for the measured points, and ``ref``'s entries corrected by it (a fit
    that makes an entry non-positive is refused)."""
    ent_feats = entry_features(ref, ref.data["entries"])

    def valid(name: str, params: dict[str, Any]) -> bool:
        return bool(np.all(apply_correction(name, params, ent_feats) > 0))

    sel = select_correction(feats, measured, valid=valid)
    return sel, apply_correction(sel["model"], sel["params"], ent_feats)


def refit_table(ref_table: str | Path, table: str | Path) -> LatencyTable:
    """A transferred table fitted again from its own K measured points (after a change of the correction's
    selection rule) and rewritten in place: entries and ``transfer`` change; probes, fingerprint and the
    measured points stay as they were measured. Nothing is measured."""
    ref, path = LatencyTable.load(ref_table), Path(table)
    data = LatencyTable.load(path).data
    rec = data.get("transfer")
    if not rec or data.get("derived_from", {}).get("sha256") != file_sha256(ref_table):
        raise TableError(f"{path} is not a table transferred from {ref_table}")
    archs = [Architecture.from_dict(p["arch"]) for p in rec["points"]]
    measured = np.array([p["measured_ms"] for p in rec["points"]], dtype=float)
    feats = point_features(ref, archs, rec["batch"], rec["seq"])
    sel, corrected = _fit(ref, feats, measured)
    for e, ms in zip(data["entries"], corrected, strict=True):
        e["latency_ms"] = round(float(ms), 5)
    kept = [SimpleNamespace(accepted_readings=p.get("accepted_readings"), state=p.get("state")) for p in rec["points"]]
    data["transfer"] = {**_transfer_record(sel, archs, feats, measured, kept, rec["batch"], rec["seq"],
                                           rec["seconds"]),
                        "refitted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
    out = LatencyTable.from_dict(data, source=str(path))
    out.save(path)
    return out


def _transferred_data(
    ref: LatencyTable, backend: Backend, corrected: np.ndarray, probe: dict[str, Any], policy: MeasurePolicy,
    seed: int, seconds: float, k: int, measurer: Measurer,
) -> dict[str, Any]:  # fmt: skip
    data = copy.deepcopy({key: v for key, v in ref.data.items() if key not in ("derived_from", "transfer")})
    entries = []
    for e, ms in zip(ref.data["entries"], corrected, strict=True):
        keep = {key: e[key] for key in ("num_layers", "hidden_size", "num_heads", "ffn_size", "batch", "seq")}
        entries.append({**keep, "latency_ms": round(float(ms), 5), "reference_ms": e["latency_ms"],
                        "state": "transferred"})  # fmt: skip
    data.update(
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        fingerprint=backend.fingerprint(),
        probe=probe,
        calibration={"scale": 1.0, "probe_ms": None, "history": []},
        entries=entries,
        measurement={"policy": policy.to_dict(), "seed": seed, "build_seconds": round(seconds, 2),
                     "seconds_per_model": round(seconds / (k + 2), 3), "method": "transfer", "resumed": False,
                     "unsettled_entries": 0, "state_changes": measurer.state_changes},  # fmt: skip
    )
    return data


def _transfer_record(sel: dict[str, Any], archs: Sequence[Architecture], feats: Features, measured: np.ndarray,
                     results: Sequence[Any], batch: int, seq: int, seconds: float) -> dict[str, Any]:  # fmt: skip
    loo = sel["loo_error_pct"] or [None] * len(archs)
    points = [
        {"arch": a.to_dict(), "reference_ms": round(float(r), 5), "reference_fixed_ms": round(float(fx), 5),
         "measured_ms": round(float(m), 5), "predicted_ms": round(float(p), 5), "loo_error_pct": e,
         "accepted_readings": res.accepted_readings, "state": res.state}
        for a, r, fx, m, p, e, res in zip(archs, feats.ref, feats.fixed, measured, sel["fitted_ms"], loo, results,
                                          strict=True)
    ]  # fmt: skip
    return {
        "model": sel["model"],
        "params": sel["params"],
        "n_params": sel["n_params"],
        "max_params": sel["max_params"],
        "tie_pct": sel["tie_pct"],
        "one_se_pct": sel.get("one_se_pct"),
        "loo": sel["loo"],
        "k": len(archs),
        "batch": batch,
        "seq": seq,
        "fitted_at": "the reference's first grid point; the correction is applied to every entry",
        "seconds": round(seconds, 2),
        "points": points,
    }
