"""Final-distillation recipes compared on a finished run's winner -> ``tools/results/final_variants_<task>.json``.

A ``kdnas-deploy run`` (or ``search``) folder fixes the teacher, the task, the held-out slice and the winner; this
tool distils that winner again under each named variant of the final recipe (``DistillConfig`` settings over
``DistillConfig.full()``'s, plus the search's ``final_epochs`` / ``final_min_steps``) for each seed, exactly as the
search's final stage does (train on everything but the held-out slice, best epoch on the held-out slice), and
records dev and held-out metrics, retention of the teacher's dev metric, wall seconds, and each variant's mean and
its paired difference from the first variant (seed by seed). Each (variant, seed) is saved as soon as it is
measured; a rerun skips finished ones (``--redo`` reruns them).

    python -m tools.bench_final_variants --run work_artifacts/glue_headroom_auto/cola/fp32 --seeds 1,2 \\
        --variant base='{}' --variant augment4='{"augment_copies": 4}'

Training only: no timing, so it may run beside other training (not beside a latency benchmark).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from kdnas_deploy.io import atomic_write_json
from tools._common import RESULTS, cpu_name, shown

SCHEMA_VERSION = 1
SEARCH_KEYS = ("final_epochs", "final_min_steps")  # variant keys that set the search's final settings


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=JSON`` -> (name, settings)."""
    name, sep, body = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=JSON, got {text!r}")
    try:
        settings = json.loads(body)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"variant {name!r}: not JSON ({e.msg})") from None
    if not isinstance(settings, dict):
        raise argparse.ArgumentTypeError(f"variant {name!r}: expected a JSON object, got {body!r}")
    return name.strip(), settings


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    return seeds


def load_run(run: Path) -> tuple[dict[str, Any], Any]:
    """The search settings and the final winner's architecture of a ``run`` folder (or of ``run`` itself when it
    is a search folder), read once."""
    from kdnas_deploy.arch import Architecture

    for folder in (run / "search", run):
        if (folder / "config.yaml").is_file() and (folder / "summary.json").is_file():
            try:
                settings = yaml.safe_load((folder / "config.yaml").read_text())["search"]
                winner = json.loads((folder / "summary.json").read_text())["final"]["winner"]
                return settings, Architecture(**winner["arch"])
            except (KeyError, TypeError) as e:
                raise ValueError(f"{folder}: no search settings or final winner in it ({e})") from None
    raise FileNotFoundError(f"{run}: no finished search (config.yaml and summary.json) here or in search/")


def evaluator(s: dict[str, Any], variant: dict[str, Any], work: Path) -> Any:
    """The search's evaluator (settings ``s``) under ``variant``; one per variant, so its seeds share the data."""
    from kdnas_deploy.search.evaluator import DistillEvaluator

    overrides = {k: v for k, v in variant.items() if k not in SEARCH_KEYS}
    return DistillEvaluator(
        teacher=s["teacher"], task=s["task"], data_dir=s.get("data_dir"), proxy_fraction=s["proxy_fraction"],
        heldout_size=s["heldout_size"], split_seed=s["seed"], cache_dir=str(work / "teacher_cache"),
        proxy_epochs=s.get("proxy_epochs"), final_epochs=variant.get("final_epochs", s.get("final_epochs")),
        proxy_min_rows=s.get("proxy_min_rows", 0), proxy_min_steps=s.get("proxy_min_steps", 0),
        final_min_steps=variant.get("final_min_steps", s.get("final_min_steps", 0)),
        max_seq_len=s.get("max_seq_len"), final_progress=False, final_overrides=overrides,
    )  # fmt: skip


def measure(ev: Any, arch: Any, name: str, variant: dict[str, Any], seed: int, work: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = ev.final(arch, seed, work / f"{name}-s{seed}")
    return {"variant": name, "seed": seed, "settings": variant, "final_epochs": res["final_epochs"],
            "dev_metrics": res["dev_metrics"], "heldout_metrics": res["heldout_metrics"],
            "retained": res.get("retained"), "teacher_dev_metrics": res.get("teacher_dev_metrics"),
            "dev_baseline": res.get("dev_baseline"), "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def summarise(runs: list[dict[str, Any]], order: list[str]) -> dict[str, Any]:
    """Per variant: mean dev metrics and retention over its seeds, and the paired difference from ``order[0]``."""
    out: dict[str, Any] = {}
    base = {r["seed"]: r for r in runs if r["variant"] == order[0]}
    for name in order:
        mine = [r for r in runs if r["variant"] == name]
        if not mine:
            continue
        metrics = sorted(mine[0]["dev_metrics"])
        row: dict[str, Any] = {"seeds": [r["seed"] for r in mine]}
        for m in metrics:
            row[f"dev_{m}_mean"] = round(statistics.fmean(r["dev_metrics"][m] for r in mine), 4)
            kept = [r["retained"][m] for r in mine if (r.get("retained") or {}).get(m) is not None]
            row[f"retained_{m}_mean"] = round(statistics.fmean(kept), 4) if kept else None
            diffs = [r["dev_metrics"][m] - base[r["seed"]]["dev_metrics"][m] for r in mine if r["seed"] in base]
            if name != order[0] and diffs:
                row[f"dev_{m}_minus_{order[0]}_paired"] = [round(d, 4) for d in diffs]
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished `kdnas-deploy run` or `search` folder")
    ap.add_argument("--variant", type=parse_variant, action="append", required=True,
                    help="NAME=JSON: DistillConfig settings (and final_epochs, final_min_steps); the first is the"
                         " reference of the paired differences")  # fmt: skip
    ap.add_argument("--seeds", type=parse_seeds, default=[1, 2], help="distillation seeds (default 1,2)")
    ap.add_argument("--work", type=Path, default=None, help="student folders (default: RUN/final_variants)")
    ap.add_argument("--results", type=Path, default=None,
                    help="results file (default: tools/results/final_variants_<task>.json)")  # fmt: skip
    ap.add_argument("--redo", action="store_true", help="measure finished (variant, seed) pairs again")
    args = ap.parse_args(argv)
    variants = dict(args.variant)
    from kdnas_deploy.distill import DistillConfig
    from kdnas_deploy.errors import ConfigError

    for name, variant in variants.items():  # a one-line error naming the key before any work
        epochs = {"epochs": variant["final_epochs"]} if "final_epochs" in variant else {}
        steps = variant.get("final_min_steps", 0)
        try:
            DistillConfig.full(**{k: v for k, v in variant.items() if k not in SEARCH_KEYS}, **epochs)
        except (ConfigError, TypeError) as e:
            ap.exit(2, f"error: variant {name!r}: {e}\n")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            ap.exit(2, f"error: variant {name!r}: final_min_steps must be an integer >= 0, got {steps!r}\n")
    try:
        settings, arch = load_run(args.run)
        task = settings["task"]
    except (OSError, ValueError, yaml.YAMLError) as e:
        ap.exit(2, f"error: --run: {e}\n")
    results = args.results or RESULTS / f"final_variants_{task}.json"
    work = args.work or args.run / "final_variants"
    try:
        doc = json.loads(results.read_text()) if results.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        ap.exit(2, f"error: {shown(results)} is unreadable ({e}); move it away or pass --results\n")
    if not isinstance(doc, dict):
        ap.exit(2, f"error: {shown(results)} is not a results object; move it away or pass --results\n")
    if doc and doc.get("run") != shown(args.run):
        ap.exit(2, f"error: {shown(results)} holds another run ({doc.get('run')}); pass --results\n")
    doc.update({"schema_version": SCHEMA_VERSION, "run": shown(args.run), "task": task, "machine": cpu_name()})
    runs = [r for r in doc.get("runs", []) if not (args.redo and r["variant"] in variants and r["seed"] in args.seeds)]
    for name, variant in variants.items():
        ev = evaluator(settings, variant, work)
        for seed in args.seeds:
            if any(r["variant"] == name and r["seed"] == seed and r["settings"] == variant for r in runs):
                continue
            print(f"[{name} seed {seed}] distilling ...", flush=True)
            row = measure(ev, arch, name, variant, seed, work)
            runs = [r for r in runs if not (r["variant"] == name and r["seed"] == seed)] + [row]
            doc["runs"] = runs
            doc["summary"] = summarise(runs, list(dict.fromkeys([*variants, *(r["variant"] for r in runs)])))
            atomic_write_json(results, doc)
            print(f"[{name} seed {seed}] dev {row['dev_metrics']} in {row['seconds']} s", flush=True)
    print(json.dumps(doc.get("summary", {}), indent=1))


if __name__ == "__main__":
    main()
