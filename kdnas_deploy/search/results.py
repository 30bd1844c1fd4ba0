"""What a search leaves besides its logs: ``pareto.json``, ``best_arch.json``, ``search.png``, and the full
distillation of the best candidates (``final/``, ``student/``)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import SearchError
from kdnas_deploy.export.card import params_from_config, write_card
from kdnas_deploy.io import atomic_directory, atomic_write_json
from kdnas_deploy.search.budget import BudgetSet
from kdnas_deploy.search.config import SearchConfig
from kdnas_deploy.search.executor import candidate_seed
from kdnas_deploy.search.pareto import pareto_mask
from kdnas_deploy.search.reward import mnas_reward, proxy_metric
from kdnas_deploy.search.run_folder import RUN_SCHEMA_VERSION, record_key

STUDENT_MARKER = "kdnas_student.json"  # in RUN_DIR/student: the architecture of the finalist it holds


class Finalizer(Protocol):
    def final(self, arch: Architecture, seed: int, out_dir: Path) -> dict[str, Any]:
        """Distill ``arch`` on the full training set into ``out_dir`` (a HF folder).

        Returns at least ``score`` (task metric on the held-out train slice), ``final_loss``,
        ``dev_metrics`` (dict) and ``model_dir``.
        """


def ranked(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records by reward, feasible ones first (under any budget mode the winner must meet the budgets)."""
    return sorted(records, key=lambda r: (not r["feasible"], -r["reward"], r["episode"], r["index"]))


def write_results(
    run_dir: Path, records: list[dict[str, Any]], budgets: BudgetSet, title: str = ""
) -> dict[str, Any]:
    """``pareto.json``, ``best_arch.json`` and ``search.png``; returns the best record."""
    if not records:
        raise SearchError("the search evaluated no candidate")
    lat = np.array([[r["latency_ms"][n] for n in budgets.names] for r in records])
    mask = pareto_mask(lat, np.array([r["proxy_metric"] for r in records]))
    first = budgets.names[0]
    front = sorted((r for r, m in zip(records, mask, strict=True) if m), key=lambda r: r["latency_ms"][first])
    atomic_write_json(
        run_dir / "pareto.json",
        {
            "schema_version": RUN_SCHEMA_VERSION,
            "objectives": {"latency_ms": "min", "proxy_metric": "max"},
            "budgets": budgets.describe(),
            "front": front,
        },
    )
    best = ranked(records)[0]
    atomic_write_json(
        run_dir / "best_arch.json",
        {
            "schema_version": RUN_SCHEMA_VERSION,
            "architecture": best["arch"],
            "arch": best["arch_str"],
            "reward": best["reward"],
            "proxy_metric": best["proxy_metric"],
            "latency_ms": best["latency_ms"],
            "feasible": best["feasible"],
            "budget_ms": {b.name: b.budget_ms for b in budgets.budgets},
        },
    )
    from kdnas_deploy.search.plot import plot_search

    plot_search(run_dir / "search.png", records, front, budgets, best, title=title)
    return best


def final_stage(
    run_dir: Path,
    records: list[dict[str, Any]],
    cfg: SearchConfig,
    budgets: BudgetSet,
    finalizer: Finalizer,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """Distill the ``final_top`` best feasible candidates fully (reusing finished ones); the winner by reward
    goes to ``RUN_DIR/student``."""
    order = ranked(records)
    picks = [r for r in order if r["feasible"]][: cfg.final_top] or order[:1]
    results = [_finalist(run_dir, rec, cfg, budgets, finalizer, echo) for rec in picks]
    winner = max(results, key=lambda r: r["reward"])
    student = run_dir / "student"
    marker = student / STUDENT_MARKER  # which finalist the folder holds (a resume may add better ones)
    held = json.loads(marker.read_text(encoding="utf-8")).get("arch_str") if marker.is_file() else None
    if held != winner["arch_str"]:
        with atomic_directory(student, force=True) as tmp:
            shutil.copytree(winner["model_dir"], tmp, dirs_exist_ok=True)
            atomic_write_json(tmp / STUDENT_MARKER, {"arch_str": winner["arch_str"], "arch": winner["arch"]})
            write_card(tmp, student_card_facts(tmp, winner, cfg, budgets))
    echo(f"final: winner {winner['arch_str']} dev {winner.get('dev_metrics')}")
    return {"winner": winner, "candidates": results, "student_dir": str(student)}


def student_card_facts(folder: Path, winner: dict[str, Any], cfg: SearchConfig, budgets: BudgetSet) -> dict[str, Any]:
    """The winner's model card facts: architecture, teacher, task, dev metrics, the tables' predicted latency."""
    arch = record_key(winner["arch"])
    facts: dict[str, Any] = {"format": "hf", "name": f"kdnas-deploy student {arch.short()}",
                             "architecture": arch.to_dict(), "teacher": cfg.teacher, "task": cfg.task}
    try:
        facts["params"] = params_from_config(arch, json.loads((folder / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass
    dev = winner.get("dev_metrics") or {}
    metrics = {k: v for k, v in dev.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if metrics:
        facts.update(metrics=metrics, split="dev")
        if winner.get("dev_baseline"):
            facts["baseline"] = winner["dev_baseline"]
        if winner.get("retained_gain"):
            facts["retained_gain"] = winner["retained_gain"]
    lat = winner.get("latency_ms") or {}
    if budgets.budgets and budgets.budgets[0].name in lat:
        first = budgets.budgets[0]
        facts["latency"] = {"median_ms": lat[first.name], "kind": "predicted", "batch": first.batch or cfg.batch,
                            "seq_len": first.seq or cfg.seq}
        if cfg.budgets:
            facts["device"] = f"as priced by latency table {cfg.budgets[0].table} (budget {first.budget_ms:g} ms)"
    return {k: v for k, v in facts.items() if v is not None}


def _finalist(
    run_dir: Path,
    rec: dict[str, Any],
    cfg: SearchConfig,
    budgets: BudgetSet,
    finalizer: Finalizer,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    arch = record_key(rec["arch"])
    out = run_dir / "final" / arch.short().replace(",", "_").replace("=", "")
    done_file = out / "final.json"
    if done_file.is_file():
        echo(f"final: {arch} already distilled (reused)")
        return json.loads(done_file.read_text(encoding="utf-8"))
    echo(f"final: distilling {arch} on the full training set ...")
    t0 = time.perf_counter()
    res = dict(finalizer.final(arch, candidate_seed(cfg.seed, arch), out / "model"))
    res.setdefault("seconds", round(time.perf_counter() - t0, 3))
    lat = budgets.latencies([arch])[0]
    metric = proxy_metric(cfg.reward.metric, res["score"], res.get("final_loss", 0.0))
    res.update(
        arch=arch.to_dict(),
        arch_str=arch.short(),
        latency_ms=rec["latency_ms"],
        reward=mnas_reward(metric, lat, budgets.budget_ms, cfg.reward),
    )
    atomic_write_json(done_file, res)
    return res
