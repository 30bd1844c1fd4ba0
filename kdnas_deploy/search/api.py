"""Python API of the search: a :class:`SearchConfig` from plain inputs, then :func:`run_search`.

``run_search`` is what the CLI, the pipeline and the tools call. Everything that can be checked before the
run folder is touched (tables, budgets, space, teacher/task) is checked first, so bad input never writes or
deletes anything there::

    config = search_config(teacher="teacher-sst2", task="sst2", budgets=[("cpu.json", 2.8)],
                           settings=PRESETS.get("quick"), headroom=0.15)
    summary = run_search(config, "runs/sst2", executor=ExecutorConfig("ray"))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdnas_deploy.distill.teachers import check_model_files
from kdnas_deploy.errors import SearchError
from kdnas_deploy.search.budget import (
    Budget,
    BudgetSet,
    apply_headroom,
    budget_specs,
    load_table,
    machine_warnings,
    parse_budget_option,
)
from kdnas_deploy.search.config import ExecutorConfig, SearchConfig, SearchSettings
from kdnas_deploy.search.evaluator import DistillEvaluator, load_task, teacher_architecture
from kdnas_deploy.search.executors import make_executor
from kdnas_deploy.search.run import SearchRun
from kdnas_deploy.space import SearchSpace


def resolve_budget_pairs(
    table: str | Path | None, budget_ms: float | None, budgets: Sequence[str]
) -> list[tuple[str, float]]:
    """(table, ms) pairs of the CLI's ``--table``/``--budget-ms`` and ``--budget TABLE.json:MS`` options."""
    pairs: list[tuple[str, float]] = []
    if (table is None) != (budget_ms is None):
        raise SearchError("--table and --budget-ms go together (or give --budget TABLE.json:MS)")
    if table is not None and budget_ms is not None:
        pairs.append((str(table), float(budget_ms)))
    pairs.extend(parse_budget_option(b) for b in budgets)
    if not pairs:
        raise SearchError("no latency budget: give --table T --budget-ms MS or --budget TABLE.json:MS")
    return pairs


def search_config(
    *,
    teacher: str | Path,
    task: str,
    budgets: Sequence[tuple[str, float]],
    settings: SearchSettings | None = None,
    data_dir: str | Path | None = None,
    headroom: float | Sequence[float] = 0.0,
    echo: Callable[[str], None] | None = print,
) -> SearchConfig:
    """The search configuration of ``settings`` (default: the defaults) for these inputs. ``budgets``: (latency
    table, ms) pairs; ``headroom``: share of each budget the search keeps free (it fits ``ms * (1 - h)``)."""
    tables = [load_table(p) for p, _ in budgets]
    targets = apply_headroom(budgets, headroom, echo=echo)
    return SearchConfig.from_settings(
        settings or SearchSettings(),
        teacher=str(teacher),
        task=task,
        budgets=budget_specs(targets, tables),
        data_dir=str(data_dir) if data_dir else None,
    )


def run_search(
    config: SearchConfig,
    out: str | Path,
    *,
    space: str | None = None,
    executor: ExecutorConfig | str = "local",
    cache_dir: str | Path | None = None,
    resume: bool = False,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a KD-NAS search with the default (distillation) evaluator; returns ``summary.json``'s content.
    ``space``: the expected search space (must match the tables'); ``progress``: a progress bar for the final
    distillation."""
    tables = [load_table(spec.table) for spec in config.budgets]
    for w in machine_warnings(tables):
        echo(f"warning: {w}")
    budget_set = BudgetSet(
        [
            Budget(t, s.budget_ms, s.name, batch=config.batch, seq=config.seq)
            for t, s in zip(tables, config.budgets, strict=True)
        ],
        space=SearchSpace.load(space) if space else None,
    )
    engine_cfg = ExecutorConfig(executor) if isinstance(executor, str) else executor
    engine = make_executor(engine_cfg.name, **engine_cfg.options)
    out = Path(out)
    evaluator = DistillEvaluator(
        teacher=config.teacher,
        task=config.task,
        data_dir=config.data_dir,
        proxy_fraction=config.proxy_fraction,
        heldout_size=config.heldout_size,
        split_seed=config.seed,
        proxy_epochs=config.proxy_epochs,
        final_epochs=config.final_epochs,
        proxy_min_rows=config.proxy_min_rows,
        proxy_min_steps=config.proxy_min_steps,
        final_min_steps=config.final_min_steps,
        max_seq_len=config.max_seq_len,
        cache_dir=str(cache_dir) if cache_dir else str(out / "teacher_cache"),
        final_progress=progress,
    )
    run = SearchRun(out, config, budget_set, evaluator, executor=engine, finalizer=evaluator, resume=resume, echo=echo)

    def check_teacher() -> None:  # runs while the executor starts (Ray: a couple of seconds)
        task_obj = load_task(config.task, config.data_dir)
        teacher_arch = teacher_architecture(config.teacher, task_obj)
        check_model_files(config.teacher)
        sp = budget_set.space
        if sp.teacher is not None and sp.teacher != teacher_arch:
            raise SearchError(
                f"the latency tables were built on space {sp.name!r} for a teacher {sp.teacher}, but the teacher"
                f" {config.teacher} is {teacher_arch}: build a table on that teacher's space"
            )
        run.teacher_arch = teacher_arch
        plan = evaluator.plan(len(task_obj.load_split("train")))  # sizes checked before the run folder exists
        echo(plan.line())

    return run.run(check=check_teacher)


__all__ = ["resolve_budget_pairs", "run_search", "search_config"]
