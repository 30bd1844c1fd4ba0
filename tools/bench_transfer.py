"""Benchmark of issue 20's transfer targets; writes tools/results/latency_transfer.json (one entry per pair).

A *pair* is a reference table and a target backend on this machine. For each pair:

1. ``transfer``   ``kdnas-deploy latency transfer REF --measure K`` (K=10) in its own process: wall time and peak
                  RSS of its process tree; the table goes to tools/results/latency_transfer/<pair>.transferred.json.
2. ``full_build`` (``--full-build``) ``kdnas-deploy latency build`` of the same space on the same target, for
                  the side by side (<pair>.full.json).
3. ``held_out``   100 models not measured by the transfer (first every depth no table measured, then random
                  members at anchor depths), measured once on the target like a build measures its entries; every
                  reading is appended to <pair>.heldout.jsonl, so a kill loses nothing and a rerun resumes.
4. ``scores``     every table (transferred, full build, the reference itself) against the same held-out points:
                  MAPE, within 5/10 % with Wilson 95 % lower bounds, spearman; raw and re-anchored (the rule of
                  :mod:`kdnas_deploy.latency.anchor`).

Pairs: ``threads-2to1-<cpu>`` (the shipped 2-thread table -> this CPU at 1 thread), ``threads-1to2-<cpu>`` (a
1-thread table of this CPU: the first pair's full build, built here when missing -> 2 threads), ``real-<cpu>`` (the
table ``kdnas-deploy run`` would transfer from -> this CPU at 2 threads; only when no shipped table matches this
machine; ``<cpu>`` names the CPU, so every CPU met keeps its own pair), ``real-openvino-<cpu>`` (the same for
the ``cpu-openvino`` backend, when OpenVINO is installed) and ``real-int8-<cpu>`` (the int8 table an int8 deployment's
``run`` would transfer from -> this CPU's int8). ``--reference TABLE`` (repeatable) adds
``cross-<TABLE's suffix>-to-<cpu>``: a shipped table of another CPU -> this CPU at 2 threads, whatever ``run`` would
pick, so every CPU met can be scored against every other; its full build is this CPU's 2-thread build of the
``threads-1to2-<cpu>`` pair when there is one (same space, same machine). Finished pairs are kept.

    python -m tools.bench_transfer --full-build
    python -m tools.bench_transfer --full-build \
        --reference latency_tables/cpu-minilm-l6-fp32-b1-s128.xeon-m207-avx512-vnni.json
    python -m tools.bench_transfer --quick          # K=3, 5 held-out models, a 2-variant space, ~2-3 minutes
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kdnas_deploy.io import append_jsonl, atomic_write_json, atomic_write_yaml, read_jsonl
from tools._common import cpu_name
from tools._transfer_targets import targets

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "tools" / "results" / "latency_transfer.json"
SHIPPED = ROOT / "latency_tables" / "cpu-minilm-l6-fp32-b1-s128.json"
DEFAULT_SPACE = "configs/spaces/minilm-l6.yaml"
QUICK_SPACE = {"name": "minilm-l6-quick", "choices": {"num_layers": [1, 2, 3, 4, 5, 6], "hidden_size": [128],
                                                      "num_heads": [4], "ffn_size": [384, 768]}}  # fmt: skip
# (backend, precision) -> prefix of its real pair: what `run` would transfer for an fp32 or an int8 deployment
REAL_PAIRS = {("cpu-ort", "fp32"): "real-", ("cpu-openvino", "fp32"): "real-openvino-",
              ("cpu-ort", "int8"): "real-int8-"}  # fmt: skip


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kdnas_deploy", *args]


def run_tracked(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` from the repository root, sampling the RSS of its process tree every 50 ms."""
    import psutil

    peak, done = 0, threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    ps = psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True)))
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    if code:
        raise SystemExit(f"command failed with exit code {code}: {' '.join(cmd)}")
    return {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_gb": round(peak / 2**30, 3),
            "command": " ".join(cmd[2:]).replace(f"{ROOT}/", "")}  # fmt: skip


def build(out: Path, threads: int, space: str, rounds: int | None = None, backend: str = "cpu-ort",
          precision: str = "fp32") -> dict[str, Any]:
    extra = ["--rounds", str(rounds)] if rounds else []
    res = run_tracked(cli("latency", "build", "--space", space, "--backend", backend, "--precision", precision,
                          "--threads", str(threads), "--batch", "1", "--seq", "128", "--out", str(out), "--quiet",
                          *extra))  # fmt: skip
    return {**res, "table": out.name}


def pairs_for(work: Path, quick: bool, references: list[Path] = ()) -> dict[str, dict[str, Any]]:
    """The pairs of this run: reference path, target threads and how a missing reference is built; each of
    ``references`` (tables of other machines) adds a ``cross-<reference>-to-<cpu>`` pair at 2 threads."""
    from kdnas_deploy.latency.fingerprint import cpu_fingerprint

    if quick:
        return {"threads-2to1": {"reference": work / "reference-t2.json", "threads": 1, "build_threads": 2}}
    # the thread pairs are per CPU too (the unsuffixed ones are the first EPYC's, kept in the results)
    cpu = cpu_slug(cpu_fingerprint())
    t1 = work / f"threads-2to1-{cpu}.full.json"  # the 1-thread full build of the first pair is the second's reference
    pairs = {
        f"threads-2to1-{cpu}": {"reference": SHIPPED, "threads": 1},
        f"threads-1to2-{cpu}": {"reference": t1, "threads": 2, "build_threads": 1},
    }
    # the real thing: the table `run` transfers from on this machine, to this machine's CPU; one pair per CPU and
    # backend met (the results keep every pair; "real", from the shipped EPYC table to an EPYC without AVX-VNNI, is
    # an older one)
    for (backend, precision), prefix in REAL_PAIRS.items():
        ref = run_reference(backend, precision)
        if ref is not None:
            pairs[f"{prefix}{cpu}"] = {"reference": ref, "threads": 2}
    for ref in references:  # a real pair even where a shipped table matches this machine (--reference)
        origin = ref.stem.split(".")[-1] if "." in ref.stem else ref.stem
        pairs[f"cross-{origin}-to-{cpu}"] = {"reference": ref.resolve(), "threads": 2,
                                             "full_from": work / f"threads-1to2-{cpu}.full.json"}  # fmt: skip
    return pairs


def measured_here(done: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pairs of the results measured on this CPU, with their recorded reference: a real pair stays runnable
    (``--redo``) after a table of this CPU shipped, when :func:`run_reference` no longer names one."""
    return {name: {"reference": ROOT / e["reference"], "threads": e["target_threads"]} for name, e in done.items()
            if e.get("cpu") == cpu_name() and (ROOT / e.get("reference", "-")).is_file()}  # fmt: skip


def cpu_slug(fp: dict[str, Any]) -> str:
    """A name for this machine's CPU in pair names: its model string and ISA tier, lowercase, dash-separated."""
    import re

    model = re.sub(r"\((r|tm)\)", "", str(fp.get("cpu_model", "cpu")).lower())
    ident = re.search(r"family (\d+) model (\d+)", str(fp.get("cpu_id", "")))  # one model string, several CPUs
    if ident:
        model += f" f{ident.group(1)}m{ident.group(2)}"
    flags = set(fp.get("isa_flags", []))
    tier = next((f for f in ("amx_tile", "avx512_bf16", "avx512_vnni", "avx2") if f in flags), "base")
    return re.sub(r"[^a-z0-9]+", "-", f"{model} {tier}").strip("-")


def run_reference(backend: str = "cpu-ort", precision: str = "fp32") -> Path | None:
    """The table ``kdnas-deploy run`` would transfer from here (default space, ``precision``, 2 threads, b1 s128,
    on ``backend``), or None when a shipped table matches this machine (no transfer then) or the backend is not
    installed."""
    from kdnas_deploy.latency.backends import BACKENDS
    from kdnas_deploy.pipeline.tables import TableRequirement, find_table, list_candidate_tables, transfer_reference
    from kdnas_deploy.space import SearchSpace

    try:
        BACKENDS[backend](precision=precision, threads=2).check_available()
    except Exception:  # noqa: BLE001 - a backend that is not installed here has no pair
        return None
    need = TableRequirement(SearchSpace.load(ROOT / DEFAULT_SPACE), "cpu", precision, 2, 1, 128, "O2", backend)
    shipped = [ROOT / "latency_tables"]
    if find_table(need, shipped) is not None:
        return None
    ref = transfer_reference(list_candidate_tables(need, shipped))
    return None if ref is None else ref.path


def held_out_archs(ref: Any, transferred: Any, n: int, seed: int) -> list[Any]:
    import numpy as np

    measured = {tuple(p["arch"].values()) for p in transferred.data["transfer"]["points"]}
    pool = [a for a in ref.space.members if tuple(a.to_dict().values()) not in measured]
    off = [a for a in pool if a.num_layers not in ref.anchors]
    on = [a for a in pool if a.num_layers in ref.anchors]
    rng = np.random.default_rng(seed)
    if n > len(pool):
        raise SystemExit(f"the space has only {len(pool)} models the transfer did not measure, {n} asked")
    if n <= len(off):
        return [off[int(i)] for i in rng.choice(len(off), size=n, replace=False)]
    return off + [on[int(i)] for i in rng.choice(len(on), size=n - len(off), replace=False)]


def measure_held_out(journal: Path, backend: Any, archs: list[Any], policy: Any, seed: int) -> dict[str, Any]:
    """Measure ``archs`` once (min of fast-state readings, probes between), journaling every reading."""
    from kdnas_deploy.latency.measure import LARGE_PROBE_ARCH, PROBE_ARCH, Job, Measurer, Reading
    from kdnas_deploy.latency.profiler import prepare_all
    from kdnas_deploy.latency.validate import noise_floor

    identity = {"archs": [a.short() for a in archs], "threads": backend.threads, "policy": policy.to_dict()}
    records = read_jsonl(journal)
    if records and records[0].get("identity") != identity:
        journal.unlink()
        records = []
    if not records:
        append_jsonl(journal, {"type": "header", "identity": identity})
    finished = [r for r in records if r.get("type") == "done"]
    if finished:
        return finished[-1]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="kdnas-bench-transfer-") as tmp:
        todo = [(PROBE_ARCH, Path(tmp) / "probe"), (LARGE_PROBE_ARCH, Path(tmp) / "probe-large")]
        todo += [(a, Path(tmp) / f"m{i}") for i, a in enumerate(archs)]
        paths = prepare_all(backend, todo, seed, workers=1, progress=True)
        jobs = [Job(f"{i}:{a.short()}", p, 1, 128) for i, (a, p) in enumerate(zip(archs, paths[2:], strict=True))]
        m = Measurer(backend, paths[0], policy, log=print, large_probe_artifact=paths[1],
                     on_reading=lambda r: append_jsonl(journal, {"type": "reading", "reading": r.to_dict()}),
                     on_probe=lambda t, ms, which, small: append_jsonl(
                         journal, {"type": "probe", "which": which, "t": t, "ms": ms, "small": small}))  # fmt: skip
        probes = [r for r in records if r.get("type") == "probe"]
        m.add_prior([Reading.from_dict(r["reading"]) for r in records if r.get("type") == "reading"],
                    [(r["t"], r["ms"]) for r in probes if r["which"] == "small"],
                    [(r["t"], r["ms"], r["small"]) for r in probes if r["which"] == "large"])  # fmt: skip
        results = m.run(jobs)
        measured = [results[j.key].latency_ms for j in jobs]
        median_job = jobs[sorted(range(len(jobs)), key=lambda i: measured[i])[len(jobs) // 2]]
        noise = noise_floor(backend, median_job, policy.timing, 5)
    record = {"type": "done", "archs": [a.to_dict() for a in archs], "measured_ms": measured,
              "unsettled": sum(results[j.key].state != "fast" for j in jobs), "window_probe": m.probe_summary(),
              "noise": noise, "seconds": round(time.time() - t0, 1)}  # fmt: skip
    append_jsonl(journal, record)
    return record


def score(table: Any, held: dict[str, Any]) -> dict[str, Any]:
    """One table against the held-out points: raw and re-anchored metrics side by side."""
    import numpy as np

    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.latency.anchor import anchor_decision, anchor_factors
    from kdnas_deploy.latency.validate import metrics

    archs = [Architecture.from_dict(a) for a in held["archs"]]
    measured = np.array(held["measured_ms"], dtype=float)
    raw = table.predict(archs, 1, 128, calibrated=False)
    anchor = anchor_decision(table.probe, held["window_probe"], held["noise"]["noise_floor_pct"])
    anchored = raw * anchor_factors(raw, table.probe, anchor)
    return {"raw": metrics(raw, measured), "anchored": metrics(anchored, measured), "anchor": anchor}


def scored_tables(name: str, ref_path: Path, work: Path) -> dict[str, Path]:
    """The tables a pair is scored on: its transferred table, the reference and, when built, the full build."""
    tables = {"transferred": work / f"{name}.transferred.json", "reference": ref_path}
    full = work / f"{name}.full.json"
    return {**tables, "full_build": full} if full.is_file() else tables


def rescore(entry: dict[str, Any], work: Path) -> dict[str, Any]:
    """A finished pair's scores recomputed from its saved tables and held-out record (e.g. after a change of the
    re-anchoring rule); nothing is measured."""
    from kdnas_deploy.latency.table import LatencyTable

    name = entry["held_out"]["points"].removesuffix(".heldout.jsonl")
    held = [r for r in read_jsonl(work / entry["held_out"]["points"]) if r.get("type") == "done"][-1]
    tables = scored_tables(name, ROOT / entry["reference"], work)
    missing = [key for key in entry["scores"] if key not in tables or not tables[key].is_file()]
    if missing:
        raise SystemExit(f"cannot rescore {name}: its {', '.join(missing)} table is missing")
    scores = {key: score(LatencyTable.load(tables[key]), held) for key in entry["scores"]}
    return {**entry, "scores": scores}


def refit(name: str, entry: dict[str, Any], work: Path) -> dict[str, Any]:
    """A finished pair's transferred table fitted again from its saved K points (:func:`refit_table`)."""
    from kdnas_deploy.latency.transfer import refit_table

    tr = refit_table(ROOT / entry["reference"], work / f"{name}.transferred.json").data["transfer"]
    loo = {k: v.get("loo_mape_pct") for k, v in tr["loo"].items()}
    return {**entry, "transfer": {**entry["transfer"], "model": tr["model"], "params": tr["params"],
                                  "loo_mape_pct": loo, "refitted_at": tr["refitted_at"]}}  # fmt: skip


def run_pair(name: str, spec: dict[str, Any], work: Path, args: argparse.Namespace, done: dict[str, Any]) -> dict:
    from kdnas_deploy.latency.backends import get_backend
    from kdnas_deploy.latency.table import LatencyTable
    from kdnas_deploy.latency.validate import policy_from_table

    entry: dict[str, Any] = dict(done)
    ref_path: Path = spec["reference"]
    if not ref_path.is_file():
        print(f"[{name}] building the reference ({spec['build_threads']} thread(s)) ...")
        entry["reference_build"] = build(ref_path, spec["build_threads"], args.space, args.rounds)
    ref_table = LatencyTable.load(ref_path)
    ref_backend, ref_precision = ref_table.backend, ref_table.precision
    entry.update(reference=str(ref_path.relative_to(ROOT)) if ref_path.is_relative_to(ROOT) else str(ref_path),
                 backend=ref_backend, target_threads=spec["threads"], k=args.k, cpu=cpu_name())  # fmt: skip
    out = work / f"{name}.transferred.json"
    if "transfer" not in entry or not out.is_file():
        print(f"[{name}] transfer, K={args.k} ...")
        cmd = cli("latency", "transfer", str(ref_path), "--measure", str(args.k), "--out", str(out), "--threads",
                  str(spec["threads"]), "--force", "--seed", str(args.seed))  # fmt: skip
        entry["transfer"] = run_tracked(cmd)
        tr = json.loads(out.read_text())["transfer"]
        entry["transfer"].update(model=tr["model"], params=tr["params"],
                                 loo_mape_pct={k: v.get("loo_mape_pct") for k, v in tr["loo"].items()})  # fmt: skip
        args.save(name, entry)
    full = work / f"{name}.full.json"
    if args.full_build and ("full_build" not in entry or not full.is_file()):
        if not full.is_file() and spec.get("full_from") and Path(spec["full_from"]).is_file():
            shutil.copyfile(spec["full_from"], full)  # this machine's 2-thread full build, made for another pair
        if full.is_file():  # built earlier as the reference of another pair: same machine, an earlier window
            built = json.loads(full.read_text())["measurement"].get("build_seconds")
            entry["full_build"] = {"table": full.name, "seconds": built,
                                   "note": "built before this pair ran (another pair's reference or a table build)"}
        else:
            print(f"[{name}] full build on the target ...")
            entry["full_build"] = build(full, spec["threads"], args.space, args.rounds, backend=ref_backend,
                                        precision=ref_precision)  # fmt: skip
        args.save(name, entry)
    tables = {key: ref_table if key == "reference" else LatencyTable.load(p)
              for key, p in scored_tables(name, ref_path, work).items()}  # fmt: skip
    ref, transferred = ref_table, tables["transferred"]
    archs = held_out_archs(ref, transferred, args.n, args.seed)
    backend = get_backend("cpu", ref.precision, threads=spec["threads"], backend=ref.backend)
    print(f"[{name}] measuring {len(archs)} held-out models ...")
    held = measure_held_out(work / f"{name}.heldout.jsonl", backend, archs, policy_from_table(ref), args.seed)
    entry["held_out"] = {"n": len(archs), "at_anchor_depths": sum(a.num_layers in ref.anchors for a in archs),
                         "noise_floor_pct": held["noise"]["noise_floor_pct"], "unsettled": held["unsettled"],
                         "seconds": held["seconds"], "points": f"{name}.heldout.jsonl"}  # fmt: skip
    entry["scores"] = {key: score(t, held) for key, t in tables.items()}
    entry["done"] = True
    args.save(name, entry)
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", default=None, help="Comma-separated pair names (default: every pair).")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--n", type=int, default=100, help="Held-out models per pair.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-build", action="store_true", help="Also build a full table of each target.")
    ap.add_argument("--redo", action="store_true", help="Forget finished pairs of this selection.")
    ap.add_argument("--rescore", action="store_true",
                    help="Score the finished pairs again from their saved tables and held-out points (no measuring).")
    ap.add_argument("--refit", action="store_true", help="Fit each finished pair's correction again from its saved "
                    "K points (after a change of the selection rule), then score it again (no measuring).")
    ap.add_argument("--quick", action="store_true", help="K=3, 5 held-out models, a 2-variant space (a test run).")
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--reference", type=Path, action="append", default=[],
                    help="A table of another machine (repeatable): adds the pair cross-<its name>-to-<this CPU>.")
    args = ap.parse_args(argv)
    for ref in args.reference:
        if not ref.is_file():
            ap.error(f"--reference {ref}: no such table file")
    work = ROOT / "tools" / "results" / "latency_transfer"
    args.space, args.rounds = DEFAULT_SPACE, None
    if args.quick:
        work = Path(tempfile.gettempdir()) / "kdnas-bench-transfer-quick"
        args.k, args.n, args.rounds = 3, 5, 1
        args.space = str(work / "space.yaml")
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_yaml(args.space, QUICK_SPACE)
    work.mkdir(parents=True, exist_ok=True)
    results_path = args.results or (work / "latency_transfer_quick.json" if args.quick else RESULTS)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.setdefault("pairs", {})

    def save(name: str, entry: dict[str, Any]) -> None:
        results["pairs"][name] = entry
        results["targets"] = targets(results["pairs"], default_space=not args.quick)
        by_cpu: dict[str, dict[str, Any]] = {}
        for key, pair in results["pairs"].items():
            by_cpu.setdefault(pair.get("cpu", "not recorded (pairs measured before 2026-12-07)"), {})[key] = pair
        results["targets_by_cpu"] = {cpu: targets(group, default_space=not args.quick) for cpu, group in by_cpu.items()}
        results.update(schema_version=1, space=args.space, quick=args.quick, k=args.k, n_held_out=args.n)
        atomic_write_json(results_path, results)

    args.save = save
    if args.rescore or args.refit:  # every finished pair of the results (or the chosen ones), whichever machine
        for name in args.pairs.split(",") if args.pairs else list(results["pairs"]):
            if results["pairs"].get(name, {}).get("done"):
                entry = refit(name, results["pairs"][name], work) if args.refit else results["pairs"][name]
                save(name, rescore(entry, work))
                print(f"[{name}] {'fitted and ' if args.refit else ''}scored again from {name}.heldout.jsonl")
        print(json.dumps(results.get("targets", {}), indent=2))
        return 0
    pairs = {**measured_here(results["pairs"]), **pairs_for(work, args.quick, args.reference)}
    chosen = args.pairs.split(",") if args.pairs else list(pairs)
    unknown = [p for p in chosen if p not in pairs]
    if unknown:
        raise SystemExit(f"unknown pair(s) {unknown} (this machine has {list(pairs)})")
    for name in chosen:
        prior = {} if args.redo else results["pairs"].get(name, {})
        if prior.get("done") and (not args.full_build or "full_build" in prior):
            print(f"[{name}] finished earlier; kept (--redo to measure again)")
            continue
        run_pair(name, pairs[name], work, args, prior)
    print(json.dumps(results.get("targets", {}), indent=2))
    print(f"results: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
