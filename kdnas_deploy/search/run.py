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
import resource
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.io import append_jsonl, atomic_write_json
from kdnas_deploy.search.budget import BudgetSet
from kdnas_deploy.search.config import SearchConfig
from kdnas_deploy.search.degenerate import proxy_uncertainty
from kdnas_deploy.search.escalate import handle_degenerate
from kdnas_deploy.search.executor import EvalRequest, EvalResult, Evaluator, Executor, LocalExecutor, candidate_seed
from kdnas_deploy.search.proposals import Evaluated, Proposal, ProposalContext, get_strategy, unused_sections
from kdnas_deploy.search.results import STUDENT_MARKER, Finalizer, final_stage, ranked, write_results
from kdnas_deploy.search.reward import mnas_reward, proxy_metric
from kdnas_deploy.search.run_folder import (
    CANDIDATES_FILE,
    CONFIG_FILE,
    EPISODES_FILE,
    ESCALATED_FILE,
    FINAL_STAGE_SETTINGS,
    RUN_SCHEMA_VERSION,
    load_records,
    open_run_folder,
    record_key,
    stored_proposals,
)

_record_key = record_key  # the old private name
PLAN_FIELDS = ("proxy_rows", "proxy_epochs", "proxy_steps", "proxy_scale")  # of the evaluator's info, when given
__all__ = [
    "CANDIDATES_FILE",
    "CONFIG_FILE",
    "EPISODES_FILE",
    "FINAL_STAGE_SETTINGS",
    "STUDENT_MARKER",
    "Finalizer",
    "SearchRun",
]


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
        self.executor: Executor = executor or LocalExecutor()
        self.strategy = get_strategy(config.strategy)
        self.finalizer = finalizer
        self.resume = resume
        self.teacher_arch = teacher_arch
        self.echo = echo
        self.records: list[dict[str, Any]] = []
        self.escalated: list[dict[str, Any]] = []  # re-evaluated at a raised proxy budget (escalated.jsonl)

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
        self._lock = open_run_folder(
            self.dir, self._config_doc(), self.resume, unused_sections(self.cfg.strategy), self.echo
        )
        self.records = load_records(self.dir)
        self.escalated = load_records(self.dir, ESCALATED_FILE)

    def _release(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()
            self._lock = None

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
            **proxy_uncertainty(res.score, res.info),
            "final_loss": res.final_loss,
            "reward": mnas_reward(metric, lat, self.budgets.budget_ms, self.cfg.reward),
            "predicted_reward": prop.predicted_reward,
            "seed": res.request.seed,
            "seconds": round(float(res.seconds), 3),
            "proxy_metrics": res.metrics,
            "proxy_round": 0 if res.request.proxy_scale == 1 else 1,
            **{k: res.info[k] for k in PLAN_FIELDS if k in res.info},
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
        props = self.strategy.propose(ctx)
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
        """Start the executor while the evaluator prepares on the driver.

        An executor's start can take seconds of mostly waiting (Ray starts its processes), and so can the
        evaluator's preparation (loading data): they overlap, the preparation in a helper thread, followed by
        the strategy's warm-up (one-time library costs that its first proposal would otherwise pay while the
        remote workers wait).
        """
        if not self.executor.remote_start:
            self.executor.start(self.evaluator)
            self.evaluator.prepare()
            return
        from concurrent.futures import ThreadPoolExecutor

        def prepare() -> None:
            self.evaluator.prepare()
            self.strategy.warm_up()

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdnas-prepare") as pool:
            prepared = pool.submit(prepare)
            try:
                self.executor.start(self.evaluator)
            finally:
                prepared.result()  # waits; its error (bad data) comes first, as in an in-process run

    def search(self) -> None:
        stored = stored_proposals(self.dir)
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
                    f"{_se_text(rec)}"
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

    def reevaluate(self, scale: float) -> list[dict[str, Any]]:
        """Every candidate of the search evaluated again at ``scale`` times the proxy budget (the ones already in
        ``escalated.jsonl`` are reused), in the search's order."""
        done = {_record_key(r["arch"]) for r in self.escalated}
        props = {_record_key(r["arch"]): Proposal(_record_key(r["arch"]), r["source"], r.get("predicted_reward"))
                 for r in self.records}  # fmt: skip
        pending = [EvalRequest(a, r["episode"], r["index"], int(r["seed"]), proxy_scale=scale)
                   for a, r in ((_record_key(r["arch"]), r) for r in self.records) if a not in done]  # fmt: skip
        for res in self.executor.run(self.evaluator, pending):
            rec = self._make_record(res, props[res.request.arch])
            append_jsonl(self.dir / ESCALATED_FILE, rec)
            self.escalated.append(rec)
            self.echo(f"  [x{scale:g} {len(self.escalated)}/{len(self.records)}] {rec['arch_str']:<24} proxy "
                      f"{rec['proxy_metric']:.4f}{_se_text(rec)} reward {rec['reward']:.4f} ({rec['seconds']:.1f}s)")
        by_arch = {_record_key(r["arch"]): r for r in self.escalated}
        return [by_arch[_record_key(r["arch"])] for r in self.records if _record_key(r["arch"]) in by_arch]

    def _plan(self, scale: float) -> dict[str, Any] | None:
        plan = getattr(self.evaluator, "proxy_plan", None)
        return plan(scale) if callable(plan) else None

    # ------------------------------------------------------------------ results
    def best_record(self) -> dict[str, Any] | None:
        order = self.ranked()
        return order[0] if order else None

    def ranked(self) -> list[dict[str, Any]]:
        """Records by reward, feasible ones first (under any budget mode the winner must meet the budgets)."""
        return ranked(self.records)

    def write_results(self) -> dict[str, Any]:
        return write_results(self.dir, self.records, self.budgets, title=f"{self.cfg.strategy} / {self.cfg.task}")

    def final_stage(self) -> dict[str, Any] | None:
        if self.finalizer is None or self.cfg.final_top == 0:
            return None
        return final_stage(self.dir, self.records, self.cfg, self.budgets, self.finalizer, self.echo)

    def run(self, check: Callable[[], None] | None = None) -> dict[str, Any]:
        """Begin the executor, run ``check`` (validation that may take a while: it overlaps the executor's
        start-up), open the run folder, search, write the results, distill the finalists. The executor is
        closed exactly once whatever happens after ``begin()``: a refused run folder leaks no Ray instance.
        The run folder stays locked (``.lock``) until the run ends."""
        try:
            return self._run(check)
        finally:
            self._release()

    def _run(self, check: Callable[[], None] | None) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.executor.begin()  # e.g. Ray: start connecting now, while the rest of the setup runs
        try:
            if check is not None:
                check()
            self.open()
            self.search()
        except BaseException:
            self.executor.close()
            raise
        searched = list(self.records)
        try:
            verdict = handle_degenerate(self, self.reevaluate, self._plan)
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
            "evaluations": len(searched),
            "reevaluations": len(self.escalated) if verdict["escalation"] else 0,
            "evaluation_budget": self.cfg.evaluations,
            "best": best,
            "best_reward": best["reward"],
            "degenerate": verdict["degenerate"],
            "escalation": verdict["escalation"],
            "proxy_plan": self._plan(1.0),
            "budgets": self.budgets.describe(),
            "teacher_arch": self.teacher_arch.to_dict() if self.teacher_arch else None,
            "teacher_latency_ms": self.budgets.predict_any(self.teacher_arch) if self.teacher_arch else None,
            "final": final,
            "search_seconds_this_session": round(t1 - t0, 3),
            "final_seconds_this_session": round(t2 - t1, 3),
            "evaluation_seconds_total": round(sum(r["seconds"] for r in (*searched, *self.escalated)), 3),
            "peak_rss_mb": _peak_rss_mb(),
        }
        atomic_write_json(self.dir / "summary.json", summary)
        return summary


@contextlib.contextmanager
def _closing_in_background(executor: Executor) -> Iterator[None]:
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


def _se_text(rec: dict[str, Any]) -> str:
    se = rec.get("proxy_se")
    return f" ±{se:.4f}" if se is not None else ""


def _fmt_lat(lat: dict[str, float]) -> str:
    return "/".join(f"{v:.2f}" for v in lat.values()) + " ms"


def _peak_rss_mb() -> float:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(self_kb, child_kb) / 1024.0, 1)
