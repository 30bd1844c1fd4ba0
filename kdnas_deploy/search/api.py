"""Python API of the search: build budgets, evaluator and config from plain arguments and run.

``run_search`` is what the CLI calls; tools and the pipeline call it too. Everything that can be checked
before the run folder is touched (tables, budgets, space, teacher/task) is checked first, so bad input never
writes or deletes anything there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import SearchError
from kdnas_deploy.search.budget import (
    Budget,
    BudgetSet,
    budget_specs,
    load_table,
    machine_warnings,
    parse_budget_option,
)
from kdnas_deploy.search.config import RewardConfig, SearchConfig, preset
from kdnas_deploy.search.executor import begin_executor, make_executor
from kdnas_deploy.space import SearchSpace


def resolve_budget_pairs(
    table: str | Path | None, budget_ms: float | None, budgets: Sequence[str]
) -> list[tuple[str, float]]:
    pairs: list[tuple[str, float]] = []
    if (table is None) != (budget_ms is None):
        raise SearchError("--table and --budget-ms go together (or give --budget TABLE.json:MS)")
    if table is not None and budget_ms is not None:
        pairs.append((str(table), float(budget_ms)))
    pairs.extend(parse_budget_option(b) for b in budgets)
    if not pairs:
        raise SearchError("no latency budget: give --table T --budget-ms MS or --budget TABLE.json:MS")
    return pairs


def run_search(
    *,
    teacher: str | Path,
    task: str,
    out: str | Path,
    budgets: Sequence[tuple[str, float]],
    data_dir: str | Path | None = None,
    space: str | None = None,
    preset_name: str = "default",
    settings: dict[str, Any] | None = None,
    reward: RewardConfig | None = None,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a KD-NAS search with the default (distillation) evaluator; returns ``summary.json``'s content.
    ``progress``: a progress bar for the final distillation."""
    from kdnas_deploy.search.evaluator import DistillEvaluator, load_task, teacher_architecture
    from kdnas_deploy.search.run import SearchRun

    tables = [load_table(p) for p, _ in budgets]
    for w in machine_warnings(tables):
        echo(f"warning: {w}")
    specs = budget_specs(budgets, tables)
    cfg = SearchConfig(
        teacher=str(teacher),
        task=task,
        budgets=specs,
        data_dir=str(data_dir) if data_dir else None,
        reward=reward or RewardConfig(),
        **preset(preset_name, **(settings or {})),
    )
    expected = SearchSpace.load(space) if space else None
    budget_set = BudgetSet(
        [Budget(t, s.budget_ms, s.name, batch=cfg.batch, seq=cfg.seq) for t, s in zip(tables, specs, strict=True)],
        space=expected,
    )
    # the inputs read so far are valid: start the executor (Ray: connect in the background) while the
    # task, the teacher and the rest of the setup load
    engine = make_executor(executor, **(executor_options or {}))
    begin_executor(engine)
    try:
        task_obj = load_task(task, cfg.data_dir)
        teacher_arch = teacher_architecture(teacher, task_obj)
        sp = budget_set.space
        if sp.teacher is not None and sp.teacher != teacher_arch:
            raise SearchError(
                f"the latency tables were built on space {sp.name!r} for a teacher {sp.teacher}, but the teacher"
                f" {teacher} is {teacher_arch}: build a table on that teacher's space"
            )
        out = Path(out)
        evaluator = DistillEvaluator(
            teacher=str(teacher),
            task=task,
            data_dir=cfg.data_dir,
            proxy_fraction=cfg.proxy_fraction,
            heldout_size=cfg.heldout_size,
            split_seed=cfg.seed,
            proxy_epochs=cfg.proxy_epochs,
            final_epochs=cfg.final_epochs,
            cache_dir=str(cache_dir) if cache_dir else str(out / "teacher_cache"),
            final_progress=progress,
        )
        run = SearchRun(
            out,
            cfg,
            budget_set,
            evaluator,
            executor=engine,
            finalizer=evaluator,
            resume=resume,
            teacher_arch=teacher_arch,
            echo=echo,
        )
    except BaseException:
        engine.close()
        raise
    return run.run()


def build_and_run(**kw: Any) -> dict[str, Any]:
    """Adapter from the CLI's options to :func:`run_search`."""
    import click

    quiet = bool(kw.get("quiet"))

    def echo(line: str) -> None:
        if not (quiet and line.startswith("  ")):
            click.echo(line)

    settings = {
        k: kw[k]
        for k in (
            "episodes",
            "candidates",
            "top_k",
            "proxy_fraction",
            "heldout_size",
            "proxy_epochs",
            "final_epochs",
            "final_top",
            "batch",
            "seq",
        )
    }
    settings.update(strategy=kw["strategy"], seed=kw["seed"])
    executor_options = {
        k: kw[o]
        for k, o in (
            ("address", "ray_address"),
            ("cpus_per_candidate", "cpus_per_candidate"),
            ("gpus_per_candidate", "gpus_per_candidate"),
        )
        if kw.get(o) is not None
    }
    if executor_options and kw["executor"] != "ray":
        raise SearchError("--ray-address, --cpus-per-candidate and --gpus-per-candidate need --executor ray")
    pairs = resolve_budget_pairs(kw["table"], kw["budget_ms"], kw["budgets"])  # type: ignore[arg-type]
    return run_search(
        teacher=kw["teacher"],
        task=str(kw["task"]),
        out=kw["out"],
        budgets=pairs,
        data_dir=kw["data_dir"],
        space=kw["space"],
        preset_name=str(kw["preset"]),
        settings=settings,
        reward=RewardConfig(
            alpha=kw["alpha"], beta=kw["beta"], hard_budget=bool(kw["hard_budget"]), metric=str(kw["metric"])
        ),
        executor=str(kw["executor"]),
        executor_options=executor_options,
        cache_dir=kw["cache_dir"],
        resume=bool(kw["resume"]),
        echo=echo,
    )
