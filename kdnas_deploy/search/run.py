"""The search loop and its run folder.

``RUN_DIR`` holds ``config.yaml`` (resolved configuration), ``episodes.jsonl`` (each episode's proposals,
written before any of them is evaluated), ``candidates.jsonl`` (one line per finished evaluation, appended
and fsynced as it finishes), ``pareto.json``, ``best_arch.json``, ``search.png``, ``final/`` (full
distillations), ``student/`` (the winner, a Hugging Face folder) and ``summary.json``.

Resume: proposals of an episode are read back from ``episodes.jsonl`` and candidates already in
``candidates.jsonl`` are skipped, so a search killed anywhere continues where it stopped and gives the same
log as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import SearchError
from kdnas_deploy.io import append_jsonl, atomic_directory, atomic_write_json, atomic_write_yaml, read_jsonl
from kdnas_deploy.search.budget import BudgetSet
from kdnas_deploy.search.config import SearchConfig, config_diff
from kdnas_deploy.search.executor import (
    EvalRequest,
    EvalResult,
    Evaluator,
    Executor,
    LocalExecutor,
    begin_executor,
    candidate_seed,
)
from kdnas_deploy.search.pareto import pareto_mask
from kdnas_deploy.search.reward import mnas_reward, proxy_metric
from kdnas_deploy.search.strategies import (
    STRATEGIES,
    STRATEGY_WARM_UPS,
    UNUSED_SETTINGS,
    Evaluated,
    Proposal,
    ProposalContext,
)

RUN_SCHEMA_VERSION = 1
# Settings that --resume may change: they pick how many of the finished candidates are distilled fully.
FINAL_STAGE_SETTINGS = ("final_top",)
STUDENT_MARKER = "kdnas_student.json"  # in RUN_DIR/student: the architecture of the finalist it holds
CONFIG_FILE = "config.yaml"
CANDIDATES_FILE = "candidates.jsonl"
EPISODES_FILE = "episodes.jsonl"


class Finalizer(Protocol):
    def final(self, arch: Architecture, seed: int, out_dir: Path) -> dict[str, Any]:
        """Distill ``arch`` on the full training set into ``out_dir`` (a HF folder).

        Returns at least ``score`` (task metric on the held-out train slice), ``final_loss``,
        ``dev_metrics`` (dict) and ``model_dir``.
        """


def _record_key(arch_dict: dict[str, int]) -> Architecture:
    return Architecture.from_dict(arch_dict)


class SearchRun:
    """One search in one run folder. ``run()`` does everything and returns the summary dict."""

    def __init__(
        self,
        run_dir: str | Path,
        config: SearchConfig,
        budgets: BudgetSet,
        evaluator: Evaluator,
        *,
        executor: Executor | None = None,
        finalizer: Finalizer | None = None,
        resume: bool = False,
        teacher_arch: Architecture | None = None,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.dir = Path(run_dir)
        self.cfg = config
        self.budgets = budgets
        self.space = budgets.space
        self.evaluator = evaluator
        self.executor = executor or LocalExecutor()
        begin_executor(self.executor)  # e.g. Ray: start connecting now, while the rest of the setup runs
        self.finalizer = finalizer
        self.resume = resume
        self.teacher_arch = teacher_arch
        self.echo = echo
        self.records: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ run folder
    def _config_doc(self) -> dict[str, Any]:
        return {
            "schema_version": RUN_SCHEMA_VERSION,
            "search": self.cfg.to_dict(),
            "space": self.space.to_dict(),
            "evaluator": self.evaluator.describe(),
        }

    def open(self) -> None:
        """Create the run folder, or check the stored config when resuming. Never deletes anything."""
        doc = self._config_doc()
        cfg_path = self.dir / CONFIG_FILE
        if self.dir.exists() and not self.dir.is_dir():
            raise SearchError(f"--out {self.dir} is a file, not a folder")
        non_empty = self.dir.is_dir() and any(self.dir.iterdir())
        if non_empty and not self.resume:
            raise SearchError(
                f"run folder {self.dir} is not empty: pass --resume to continue it, or choose another --out"
            )
        if non_empty:
            if not cfg_path.is_file():
                raise SearchError(
                    f"cannot resume {self.dir}: it has no {CONFIG_FILE}, so it is not a search run folder"
                )
            import yaml

            try:
                old = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError:
                raise SearchError(f"cannot resume {self.dir}: {CONFIG_FILE} is not valid YAML") from None
            # settings of a strategy this run does not use (the controller of a random search) cannot matter;
            # FINAL_STAGE_SETTINGS only say how many finished candidates get the full distillation
            old_search, new_search = old.get("search", {}), doc["search"]
            skip = (*UNUSED_SETTINGS.get(self.cfg.strategy, ()), *FINAL_STAGE_SETTINGS)
            diffs = config_diff(_without(old_search, skip), _without(new_search, skip))
            if old.get("space", {}).get("choices") != _yaml_round(doc["space"]).get("choices"):
                diffs.append("space choices differ")
            if diffs:
                raise SearchError(
                    f"cannot resume {self.dir}: it was made with a different configuration"
                    f" ({'; '.join(diffs[:6])}"
                    f"{'; ...' if len(diffs) > 6 else ''}); use a new --out"
                )
            final = {k: new_search[k] for k in FINAL_STAGE_SETTINGS if k in new_search}
            changed = config_diff({k: old_search.get(k) for k in final}, final)
            if changed:  # the stored configuration says what the folder now holds
                self.echo(f"resume: {'; '.join(changed)} (the search itself is unchanged)")
                atomic_write_yaml(cfg_path, {**old, "search": {**old_search, **final}})
        else:
            atomic_write_yaml(cfg_path, doc)
        self.records = self._load_records()

    def _load_records(self) -> list[dict[str, Any]]:
        seen: set[Architecture] = set()
        out = []
        for rec in read_jsonl(self.dir / CANDIDATES_FILE):
            try:
                arch = _record_key(rec["arch"])
            except Exception:  # noqa: BLE001 - a foreign line is skipped, not fatal
                continue
            if arch not in seen:
                seen.add(arch)
                out.append(rec)
        return out

    # ------------------------------------------------------------------ records
    def _history(self, before_episode: int) -> tuple[Evaluated, ...]:
        rows = [r for r in self.records if r["episode"] < before_episode]
        rows.sort(key=lambda r: (r["episode"], r["index"]))
        return tuple(Evaluated(_record_key(r["arch"]), float(r["reward"]), r["episode"], r["index"]) for r in rows)

    def _make_record(self, res: EvalResult, prop: Proposal) -> dict[str, Any]:
        arch = res.request.arch
        lat = self.budgets.latencies([arch])[0]
        metric = proxy_metric(self.cfg.reward.metric, res.score, res.final_loss)
        return {
            "schema_version": RUN_SCHEMA_VERSION,
            "episode": res.request.episode,
            "index": res.request.index,
            "strategy": self.cfg.strategy,
            "source": prop.source,
            "arch": arch.to_dict(),
            "arch_str": arch.short(),
            "latency_ms": {n: round(float(v), 6) for n, v in zip(self.budgets.names, lat, strict=True)},
            "feasible": bool(np.all(lat <= self.budgets.budget_ms)),
            "metric_kind": self.cfg.reward.metric,
            "proxy_metric": metric,
            "proxy_score": res.score,
            "final_loss": res.final_loss,
            "reward": mnas_reward(metric, lat, self.budgets.budget_ms, self.cfg.reward),
            "predicted_reward": prop.predicted_reward,
            "seed": res.request.seed,
            "seconds": round(float(res.seconds), 3),
            "proxy_metrics": res.metrics,
        }

    # ------------------------------------------------------------------ episodes
    def _proposals(self, episode: int, stored: dict[int, list[dict[str, Any]]]) -> list[Proposal] | None:
        if episode in stored:
            return [Proposal(_record_key(p["arch"]), p["source"], p.get("predicted_reward")) for p in stored[episode]]
        history = self._history(episode)
        done = {h.arch for h in history}
        eligible = (
            self.budgets.feasible_mask() if self.cfg.reward.hard_budget else np.ones(len(self.space.members), bool)
        )
        pool = tuple(a for a, ok in zip(self.space.members, eligible, strict=True) if ok and a not in done)
        if not pool:
            return None
        ctx = ProposalContext(
            config=self.cfg,
            space=self.space,
            budgets=self.budgets,
            episode=episode,
            k=min(self.cfg.top_k, len(pool)),
            rng=np.random.default_rng([self.cfg.seed, episode]),
            history=history,
            pool=pool,
        )
        props = STRATEGIES[self.cfg.strategy](ctx)
        append_jsonl(
            self.dir / EPISODES_FILE,
            {
                "schema_version": RUN_SCHEMA_VERSION,
                "episode": episode,
                "epsilon": self.cfg.epsilon(episode),
                "proposals": [
                    {"arch": p.arch.to_dict(), "source": p.source, "predicted_reward": p.predicted_reward}
                    for p in props
                ],
            },
        )
        return props

    def _start_and_prepare(self) -> None:
        """Start the executor (optional hook ``start()``) while the evaluator prepares on the driver.

        An executor's start can take seconds of mostly waiting (Ray starts its processes), and so can the
        evaluator's preparation (loading data): they overlap, the preparation in a helper thread, followed by
        the strategy's warm-up (one-time library costs that its first proposal would otherwise pay while the
        remote workers wait).
        """
        start = getattr(self.executor, "start", None)
        if not callable(start):
            self.evaluator.prepare()
            return
        from concurrent.futures import ThreadPoolExecutor

        warm_up = STRATEGY_WARM_UPS.get(self.cfg.strategy)

        def prepare() -> None:
            self.evaluator.prepare()
            if warm_up is not None:
                warm_up()

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdnas-prepare") as pool:
            prepared = pool.submit(prepare)
            try:
                start(self.evaluator)
            finally:
                prepared.result()  # waits; its error (bad data) comes first, as in an in-process run

    def search(self) -> None:
        stored: dict[int, list[dict[str, Any]]] = {}
        for row in read_jsonl(self.dir / EPISODES_FILE):
            stored.setdefault(int(row["episode"]), row["proposals"])
        self._start_and_prepare()
        total = self.cfg.evaluations
        for episode in range(self.cfg.episodes):
            t0 = time.perf_counter()
            props = self._proposals(episode, stored)
            if props is None:
                self.echo(f"episode {episode + 1}/{self.cfg.episodes}: every eligible member is evaluated; stopping")
                break
            done = {_record_key(r["arch"]) for r in self.records}
            by_arch = {p.arch: p for p in props}
            pending = [
                EvalRequest(p.arch, episode, i, candidate_seed(self.cfg.seed, p.arch))
                for i, p in enumerate(props)
                if p.arch not in done
            ]
            reused = len(props) - len(pending)
            for res in self.executor.run(self.evaluator, pending):
                rec = self._make_record(res, by_arch[res.request.arch])
                append_jsonl(self.dir / CANDIDATES_FILE, rec)
                self.records.append(rec)
                self.echo(
                    f"  [{len(self.records)}/{total}] {rec['arch_str']:<24} latency "
                    f"{_fmt_lat(rec['latency_ms'])} proxy {rec['proxy_metric']:.4f}"
                    f" reward {rec['reward']:.4f}"
                    f" ({rec['seconds']:.1f}s)"
                )
            best = self.best_record()
            self.echo(
                f"episode {episode + 1}/{self.cfg.episodes} [{self.cfg.strategy}]"
                f" eps={self.cfg.epsilon(episode):.2f}:"
                f" {len(pending)} evaluated{f', {reused} reused' if reused else ''}"
                f" in {time.perf_counter() - t0:.1f}s;"
                f" best {best['arch_str'] if best else '-'}"
                f" reward {best['reward'] if best else float('nan'):.4f}"
            )

    # ------------------------------------------------------------------ results
    def best_record(self) -> dict[str, Any] | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def ranked(self) -> list[dict[str, Any]]:
        """Records by reward, feasible ones first (under any budget mode the winner must meet the budgets)."""
        return sorted(self.records, key=lambda r: (not r["feasible"], -r["reward"], r["episode"], r["index"]))

    def write_results(self) -> dict[str, Any]:
        recs = self.records
        if not recs:
            raise SearchError("the search evaluated no candidate")
        lat = np.array([[r["latency_ms"][n] for n in self.budgets.names] for r in recs])
        met = np.array([r["proxy_metric"] for r in recs])
        mask = pareto_mask(lat, met)
        front = sorted(
            (r for r, m in zip(recs, mask, strict=True) if m),
            key=lambda r: r["latency_ms"][self.budgets.names[0]],
        )
        atomic_write_json(
            self.dir / "pareto.json",
            {
                "schema_version": RUN_SCHEMA_VERSION,
                "objectives": {"latency_ms": "min", "proxy_metric": "max"},
                "budgets": self.budgets.describe(),
                "front": front,
            },
        )
        best = self.best_record()
        assert best is not None
        atomic_write_json(
            self.dir / "best_arch.json",
            {
                "schema_version": RUN_SCHEMA_VERSION,
                "architecture": best["arch"],
                "arch": best["arch_str"],
                "reward": best["reward"],
                "proxy_metric": best["proxy_metric"],
                "latency_ms": best["latency_ms"],
                "feasible": best["feasible"],
                "budget_ms": {b.name: b.budget_ms for b in self.budgets.budgets},
            },
        )
        from kdnas_deploy.search.plot import plot_search

        plot_search(
            self.dir / "search.png",
            recs,
            front,
            self.budgets,
            best,
            title=f"{self.cfg.strategy} / {self.cfg.task}",
        )
        return best

    def final_stage(self) -> dict[str, Any] | None:
        if self.finalizer is None or self.cfg.final_top == 0:
            return None
        picks = [r for r in self.ranked() if r["feasible"]][: self.cfg.final_top] or self.ranked()[:1]
        results = []
        for rec in picks:
            arch = _record_key(rec["arch"])
            out = self.dir / "final" / arch.short().replace(",", "_").replace("=", "")
            done_file = out / "final.json"
            if done_file.is_file():
                res = json.loads(done_file.read_text(encoding="utf-8"))
                self.echo(f"final: {arch} already distilled (reused)")
            else:
                self.echo(f"final: distilling {arch} on the full training set ...")
                t0 = time.perf_counter()
                res = dict(self.finalizer.final(arch, candidate_seed(self.cfg.seed, arch), out / "model"))
                res.setdefault("seconds", round(time.perf_counter() - t0, 3))
                lat = self.budgets.latencies([arch])[0]
                metric = proxy_metric(self.cfg.reward.metric, res["score"], res.get("final_loss", 0.0))
                res.update(
                    arch=arch.to_dict(),
                    arch_str=arch.short(),
                    latency_ms=rec["latency_ms"],
                    reward=mnas_reward(metric, lat, self.budgets.budget_ms, self.cfg.reward),
                )
                atomic_write_json(done_file, res)
            results.append(res)
        winner = max(results, key=lambda r: r["reward"])
        student = self.dir / "student"
        marker = student / STUDENT_MARKER  # which finalist the folder holds (a resume may add better ones)
        held = json.loads(marker.read_text(encoding="utf-8")).get("arch_str") if marker.is_file() else None
        if held != winner["arch_str"]:
            with atomic_directory(student, force=True) as tmp:
                shutil.copytree(winner["model_dir"], tmp, dirs_exist_ok=True)
                atomic_write_json(tmp / STUDENT_MARKER, {"arch_str": winner["arch_str"], "arch": winner["arch"]})
        self.echo(f"final: winner {winner['arch_str']} dev {winner.get('dev_metrics')}")
        return {"winner": winner, "candidates": results, "student_dir": str(student)}

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.open()
        try:
            self.search()
        except BaseException:
            self.executor.close()
            raise
        with _closing_in_background(self.executor):  # Ray stops its processes while the results are written
            best = self.write_results()
        t1 = time.perf_counter()
        final = self.final_stage()
        t2 = time.perf_counter()
        summary = {
            "schema_version": RUN_SCHEMA_VERSION,
            "strategy": self.cfg.strategy,
            "seed": self.cfg.seed,
            "task": self.cfg.task,
            "evaluations": len(self.records),
            "evaluation_budget": self.cfg.evaluations,
            "best": best,
            "best_reward": best["reward"],
            "budgets": self.budgets.describe(),
            "teacher_arch": self.teacher_arch.to_dict() if self.teacher_arch else None,
            "teacher_latency_ms": self.budgets.predict_any(self.teacher_arch) if self.teacher_arch else None,
            "final": final,
            "search_seconds_this_session": round(t1 - t0, 3),
            "final_seconds_this_session": round(t2 - t1, 3),
            "evaluation_seconds_total": round(sum(r["seconds"] for r in self.records), 3),
            "peak_rss_mb": _peak_rss_mb(),
        }
        atomic_write_json(self.dir / "summary.json", summary)
        return summary


@contextlib.contextmanager
def _closing_in_background(executor: Any) -> Iterator[None]:
    """Close ``executor`` in a helper thread during the block; its error, if any, is raised at the end.

    Stopping a local Ray instance takes 0.3 s of mostly waiting for processes to exit; writing the results
    (JSON, the search plot) does not need the executor, so the two overlap."""
    errors: list[BaseException] = []

    def close() -> None:
        try:
            executor.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(exc)

    thread = threading.Thread(target=close, name="kdnas-executor-close")
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if errors:
        raise errors[0]


def _fmt_lat(lat: dict[str, float]) -> str:
    return "/".join(f"{v:.2f}" for v in lat.values()) + " ms"


def _peak_rss_mb() -> float:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(self_kb, child_kb) / 1024.0, 1)


def _without(settings: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in keys}


def _yaml_round(doc: dict[str, Any]) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(yaml.safe_dump(doc))
