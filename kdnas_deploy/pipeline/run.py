"""``kdnas-deploy run``: every stage from one config, each writing its artifact into the run folder.

latency table(s) (reused when a table with a matching fingerprint exists) -> teacher (given or fine-tuned)
-> search (+ final distillation) -> export (student and teacher) -> bench against the prediction -> report.
A stage whose inputs have not changed is not run again (:mod:`kdnas_deploy.pipeline.stages`); a killed run
resumes where it stopped (every stage below is resumable on its own too).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.config import to_plain
from kdnas_deploy.errors import ConfigError, ModelError, SearchError, TableError, WeakTeacherError
from kdnas_deploy.io import atomic_write_yaml, make_dirs
from kdnas_deploy.pipeline import seq as seqs
from kdnas_deploy.pipeline.config import DeviceSection, PipelineConfig
from kdnas_deploy.pipeline.per_device import DeployStages
from kdnas_deploy.pipeline.sizes import proxy_plan
from kdnas_deploy.pipeline.stages import StageRunner
from kdnas_deploy.pipeline.summary import RunFacts, write_outputs
from kdnas_deploy.pipeline.tables import (
    TABLE_DIRS_ENV,
    TableRequirement,
    arch_of,
    check_device_backend,
    device_inputs,
    find_table,
    keep_in_cache,
    list_candidate_tables,
    no_match_line,
    table_file_prefix,
    table_mismatches,
    table_search_dirs,
    transfer_line,
    transfer_reference,
)
from kdnas_deploy.search.budget import apply_headroom
from kdnas_deploy.space import SearchSpace

RUN_SCHEMA_VERSION = 1
log = logging.getLogger(__name__)
TRANSFER_K = 10  # models measured when run transfers another machine's table
__all__ = ["TABLE_DIRS_ENV", "Pipeline", "find_table", "run_pipeline", "table_matches", "table_search_dirs"]


def table_matches(table: Any, space: SearchSpace, dev: DeviceSection, batch: int, seq: int,
                  optimize: str) -> list[str]:
    """Why ``table`` cannot serve ``dev`` (empty when it can)."""
    return table_mismatches(table, requirement(space, dev, batch, seq, optimize))


def requirement(space: SearchSpace, dev: DeviceSection, batch: int, seq: int, optimize: str) -> TableRequirement:
    return TableRequirement(space, dev.device, dev.precision, dev.threads, batch, seq, optimize, dev.backend)


@dataclass
class Pipeline(DeployStages):
    config: PipelineConfig
    run_dir: Path
    echo: Callable[[str], None] = print
    progress: bool = True

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.stages = StageRunner(self.run_dir, echo=self.echo)
        self.space = SearchSpace.load(self.config.space)
        self.profile: dict[str, Any] | None = None  # the task's length distribution (latency.seq: auto)
        self.backend_picks: dict[str, dict[str, Any]] = {}  # devices[].backend: auto -> what was picked and why
        self.headroom: dict[str, float] = {}  # each device's headroom as applied (auto resolved)
        self.lookup_seq = self.seq = 0 if seqs.is_auto(self.config) else int(self.config.latency.seq)

    # ------------------------------------------------------------------ the length priced at
    def seq_stage(self) -> dict[str, Any]:
        """``latency.seq: auto``: tokenise the training split once (a cached stage) -> the length profile."""
        cfg = self.config
        inputs = {"task": cfg.task.__dict__, "tokenizer": seqs.tokenizer_dir(cfg), "quantile": cfg.latency.seq_quantile}
        out = self.stages.run("seq", inputs, lambda: seqs.length_profile(cfg)).outputs
        self.profile = out
        self.lookup_seq = seqs.lookup_seq(cfg, out)
        return out

    # ------------------------------------------------------------------ stages
    def latency_stage(self, dev: DeviceSection) -> dict[str, Any]:
        cfg = self.config
        inputs = {"device": device_inputs(dev), "space": self.space.fingerprint, "batch": cfg.latency.batch,
                  "seq": self.lookup_seq, "optimize": cfg.export.optimize}

        def work() -> dict[str, Any]:
            from kdnas_deploy.latency.table import LatencyTable

            if dev.table:
                table = LatencyTable.load(dev.table)
                why = table_matches(table, self.space, dev, cfg.latency.batch, self.lookup_seq, cfg.export.optimize)
                for w in why:
                    self.echo(f"warning: table {dev.table}: {w}")
                return {"table": str(Path(dev.table).resolve()), "reused": True}
            need = requirement(self.space, dev, cfg.latency.batch, self.lookup_seq, cfg.export.optimize)
            candidates = list_candidate_tables(need)
            found = next((c.path for c in candidates if c.matches), None)
            if found is not None:
                self.echo(f"[latency-{dev.name}] reusing {found} (fingerprint matches this machine)")
                return {"table": str(found), "reused": True}
            ref = transfer_reference(candidates) if cfg.latency.transfer == "auto" else None
            if ref is not None:
                self.echo(f"[latency-{dev.name}] {transfer_line(ref, TRANSFER_K)}")
                try:
                    return self._transfer_table(dev, need, ref.path)
                except TableError as exc:  # the reference cannot be transferred here: build as without one
                    self.echo(f"[latency-{dev.name}] cannot transfer {ref.path.name} ({exc}); building one (~4 min)")
            else:
                self.echo(f"[latency-{dev.name}] {no_match_line(candidates, need)}")
            return self._build_table(dev, need)

        return self.stages.run(f"latency-{dev.name}", inputs, work).outputs

    def _build_table(self, dev: DeviceSection, need: TableRequirement) -> dict[str, Any]:
        """Build a table into the run folder and keep a copy in the table cache for later runs."""
        from kdnas_deploy.latency.backends import get_backend
        from kdnas_deploy.latency.profiler import build_table
        from kdnas_deploy.search.budget import file_sha256

        out = self.run_dir / "latency" / f"{dev.name}.json"
        backend = get_backend(dev.device, dev.precision, threads=dev.threads, backend=dev.backend)
        grid = sorted({*seqs.AUTO_GRID, need.seq}) if self.profile is not None else [need.seq]
        build_table(self.space, backend, [need.batch], grid, out, log=self.echo, progress=self.progress)
        name = (f"{table_file_prefix(dev)}-{self.space.name}-{dev.precision}-t{dev.threads}-b{need.batch}-s{need.seq}"
                f"-{file_sha256(out)[:10]}.json")
        cached = keep_in_cache(out, name)
        if cached is not None:
            self.echo(f"[latency-{dev.name}] kept in the table cache: {cached}")
        return {"table": str(out), "reused": False, "cached_copy": str(cached) if cached else None}

    def _transfer_table(self, dev: DeviceSection, need: TableRequirement, ref: Path) -> dict[str, Any]:
        """Transfer ``ref`` (another machine's table) to this one into the run folder, kept in the table cache
        like a built table, so the next run finds it through the fingerprint match."""
        from kdnas_deploy.latency import transfer
        from kdnas_deploy.latency.backends import get_backend
        from kdnas_deploy.search.budget import file_sha256

        out = self.run_dir / "latency" / f"{dev.name}.json"
        make_dirs(out.parent)
        backend = get_backend(dev.device, dev.precision, threads=dev.threads, backend=dev.backend)
        transfer.transfer_table(ref, backend, k=TRANSFER_K, out=out, log=self.echo, progress=self.progress,
                                space=self.space, force=True)  # fmt: skip
        name = (f"{table_file_prefix(dev)}-{self.space.name}-{dev.precision}-t{dev.threads}-b{need.batch}-s{need.seq}"
                f"-transferred-{file_sha256(out)[:10]}.json")
        cached = keep_in_cache(out, name)
        if cached is not None:
            self.echo(f"[latency-{dev.name}] kept in the table cache: {cached}")
        return {"table": str(out), "reused": False, "transferred_from": str(ref),
                "cached_copy": str(cached) if cached else None}

    def teacher_stage(self) -> dict[str, Any]:
        cfg = self.config
        # allow_weak decides what run does with the teacher, not which teacher it is: not an input
        inputs = {"teacher": {k: v for k, v in cfg.teacher.__dict__.items() if k != "allow_weak"},
                  "task": cfg.task.__dict__}

        def work() -> dict[str, Any]:
            from kdnas_deploy.distill.evaluate import evaluate_model
            from kdnas_deploy.tasks import get_task

            task = get_task(cfg.task.name, cfg.task.data_dir)
            recipe: dict[str, Any] = {}
            if cfg.teacher.path:
                path = Path(cfg.teacher.path)
                metrics = evaluate_model(path, task, "dev", cfg.teacher.max_seq_len, progress=self.progress)
                seq_len = int(metrics["max_seq_len"])  # given, else the teacher's recorded one, else 128
            else:
                from kdnas_deploy.distill.finetune import finetune_teacher

                path = self.run_dir / "teacher"
                result = finetune_teacher(cfg.teacher.finetune_from, task, path, None, progress=self.progress,
                                          force=True, preset=cfg.teacher.preset, overrides=cfg.teacher.overrides())
                recipe, seq_len = result["recipe"], int(result["config"]["max_seq_len"])
                metrics = json.loads((path / "dev_metrics.json").read_text(encoding="utf-8"))
            return {"teacher": str(path.resolve()), "dev_metrics": _numeric(metrics),
                    "main_metric": task.main_metric, "baseline": _numeric(metrics.get("baseline") or {}),
                    "max_seq_len": seq_len, "recipe": recipe}

        return self.stages.run("teacher", inputs, work).outputs

    def check_teacher(self, teacher: dict[str, Any]) -> dict[str, Any]:
        """The weak-teacher check before the search: a loud warning, and ``WeakTeacherError`` (nothing of the
        search written) unless ``teacher.allow_weak``. Fills in the baseline of a teacher stage cached before
        baselines were recorded."""
        from kdnas_deploy.tasks.baselines import weak_teacher

        if not teacher.get("baseline"):
            teacher["baseline"] = self._dev_baseline()
        metric = teacher["main_metric"]
        weak = weak_teacher(metric, teacher["dev_metrics"][metric], teacher["baseline"][metric])
        if weak.weak:
            line = weak.message(self.config.task.name)
            log.warning("WARNING: weak teacher: %s", line)
            if not self.config.teacher.allow_weak:
                raise WeakTeacherError(f"{line}; the search would distill noise (set teacher.allow_weak: true to "
                                       "run it anyway)")  # fmt: skip
        return weak.to_dict()

    def _dev_baseline(self) -> dict[str, float]:
        from kdnas_deploy.tasks import get_task
        from kdnas_deploy.tasks.baselines import task_baseline

        task = get_task(self.config.task.name, self.config.task.data_dir)
        return task_baseline(task, task.load_split("dev")["label"])

    def budgets(self, tables: dict[str, str], teacher: Architecture) -> list[tuple[str, float]]:
        """(table, budget in ms) per device: what the deployed student must meet."""
        from kdnas_deploy.latency.table import LatencyTable

        pairs = []
        for dev in self.config.devices:
            table = LatencyTable.load(tables[dev.name])
            if dev.budget_ms is not None:
                budget = dev.budget_ms
            else:
                assert dev.budget_fraction is not None
                ref = dev.budget_reference()  # budget_of: the teacher priced on another path of the device
                on = table if ref is None else LatencyTable.load(self.latency_stage(ref)["table"])
                teacher_ms = float(on.predict_one(teacher, batch=self.config.latency.batch, seq=self.seq))
                budget = round(dev.budget_fraction * teacher_ms, 4)
                path = "" if ref is None else f" on {dev.budget_of}"
                self.echo(f"budget {dev.name}: {dev.budget_fraction} x teacher {teacher_ms:.3f} ms{path} = "
                          f"{budget:.3f} ms")  # fmt: skip
            pairs.append((tables[dev.name], budget))
        return pairs

    def search_budgets(self, budgets: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """The budgets the search must fit: each device's budget less its headroom (``auto``: from its table's
        validated error, :mod:`kdnas_deploy.latency.headroom`)."""
        from kdnas_deploy.latency.headroom import auto_headroom

        devices = self.config.devices
        for dev, (table, _) in zip(devices, budgets, strict=True):
            share = dev.headroom
            if share == "auto":
                share, why = auto_headroom(table)
                self.echo(f"headroom {dev.name}: auto = {why}")
            self.headroom[dev.name] = float(share)
        shares = [self.headroom[d.name] for d in devices]
        return apply_headroom(budgets, shares, [d.name for d in devices], self.echo)

    def search_stage(self, teacher: dict[str, Any], budgets: list[tuple[str, float]], keys: list[str]) -> dict:
        cfg = self.config
        s = cfg.search
        settings_key = {k: v for k, v in to_plain(s).items() if k != "executor"}  # where they run changes nothing
        inputs = {"search": settings_key, "teacher": teacher["teacher"], "budgets": budgets, "upstream": keys,
                  "max_seq_len": teacher.get("max_seq_len"),
                  "space": self.space.fingerprint, "batch": cfg.latency.batch, "seq": self.seq}

        def work() -> dict[str, Any]:
            from kdnas_deploy.search.api import run_search, search_config

            out = self.run_dir / "search"
            # the student is distilled and scored at the teacher's length (the same length for both evaluations)
            length = s.max_seq_len or teacher.get("max_seq_len")
            settings = dataclasses.replace(s, final_top=max(1, s.final_top), batch=cfg.latency.batch, seq=self.seq,
                                           max_seq_len=length)
            config = search_config(teacher=teacher["teacher"], task=cfg.task.name, budgets=budgets,
                                   settings=settings, data_dir=cfg.task.data_dir, echo=None)
            summary = run_search(config, out, space=cfg.space, executor=s.executor,
                                 resume=(out / "config.yaml").is_file(), echo=self.echo, progress=self.progress)
            final = summary.get("final") or {}
            if not final.get("student_dir"):
                raise SearchError("the search produced no final student")
            return {"run": str(out), "student": final["student_dir"], "best": summary["best"]["arch_str"],
                    "winner": final["winner"], "degenerate": summary.get("degenerate"),
                    "escalation": summary.get("escalation"), "proxy_plan": summary.get("proxy_plan")}

        return self.stages.run("search", inputs, work).outputs

    @property
    def bench_seq(self) -> int:
        """The length export and bench measure at: bench.seq, or the chosen length with latency.seq auto."""
        return self.seq if self.profile is not None else self.config.bench.seq

    # ------------------------------------------------------------------ whole run
    def preflight(self) -> None:
        """The checks that need the file system, before anything is written: the teacher folder, the task,
        each given table and the grid point the run predicts at (what the config loader cannot see)."""
        from kdnas_deploy.latency.table import LatencyTable
        from kdnas_deploy.tasks import is_known_task, task_names

        cfg = self.config
        if cfg.teacher.path is not None and not Path(cfg.teacher.path).is_dir():
            raise ModelError(f"teacher.path: model folder not found: {cfg.teacher.path}")
        if not is_known_task(cfg.task.name):
            raise ConfigError(f"task.name: unknown task {cfg.task.name!r} (known: {', '.join(task_names())}, "
                              "or a .csv/.tsv/.json file)")  # fmt: skip
        if cfg.task.data_dir is not None and not Path(cfg.task.data_dir).is_dir():
            raise ConfigError(f"task.data_dir: folder not found: {cfg.task.data_dir}")
        for dev in cfg.devices:
            check_device_backend(dev)
            if dev.table is None:
                continue
            table = LatencyTable.load(dev.table)
            table.resolve_grid(cfg.latency.batch, None if seqs.is_auto(cfg) else self.seq)  # TableError naming the grid
            if dev.backend != "auto" and table.backend != dev.backend_name:
                raise TableError(f"devices[{dev.name!r}].table {dev.table} prices backend {table.backend}, the "
                                 f"device is served by {dev.backend_name}")  # fmt: skip

    def resolve_backends(self) -> None:
        """``backend: auto`` devices get the fastest backend installed here (a cached stage: a resumed run keeps
        its pick); with a given table, the table's backend. The resolved config is saved beside the given one."""
        from kdnas_deploy.latency.pick import BackendPick, pick_backend

        devices = []
        for dev in self.config.devices:
            if dev.backend != "auto":
                devices.append(dev)
                continue
            inputs = {"device": device_inputs(dev), "seq": self.config.bench.seq, "batch": self.config.bench.batch}

            def work(dev: DeviceSection = dev) -> dict[str, Any]:
                if dev.table:
                    from kdnas_deploy.latency.table import LatencyTable

                    return BackendPick(LatencyTable.load(dev.table).backend, dev.precision).to_dict()
                return pick_backend(dev.device, dev.precision, dev.threads, self.config.bench.batch,
                                    self.config.bench.seq).to_dict()  # fmt: skip

            pick = self.stages.run(f"backend-{dev.name}", inputs, work).outputs
            self.echo(f"[backend-{dev.name}] {BackendPick.from_dict(pick).line()}")
            self.backend_picks[dev.name] = pick
            devices.append(dataclasses.replace(dev, backend=pick["chosen"]))
        if self.backend_picks:
            self.config = dataclasses.replace(self.config, devices=tuple(devices))
            atomic_write_yaml(self.run_dir / "config.resolved.yaml", self.config.to_dict())

    def run(self) -> dict[str, Any]:
        self.preflight()
        self.echo(f"[search] {proxy_plan(self.config).line()}")  # sizes checked before anything is written
        make_dirs(self.run_dir)
        atomic_write_yaml(self.run_dir / "config.yaml", self.config.to_dict())
        self.resolve_backends()
        if seqs.is_auto(self.config):
            self.seq_stage()
        tables = {dev.name: self.latency_stage(dev)["table"] for dev in self.config.devices}
        self.seq = seqs.chosen_seq(self.config, self.profile, list(tables.values()))
        if self.profile is not None:
            self.echo(f"[seq] {seqs.seq_line(seqs.seq_facts(self.config, self.profile, self.seq))}")
        teacher = self.teacher_stage()
        teacher["weak_teacher"] = self.check_teacher(teacher)
        teacher_arch = arch_of(teacher["teacher"])
        budgets = self.budgets(tables, teacher_arch)
        keys = [self.stages.results[f"latency-{d.name}"].key for d in self.config.devices]
        search = self.search_stage(teacher, self.search_budgets(budgets), keys + [self.stages.results["teacher"].key])
        _, bench, devices = self.deploy_stages(search, teacher, tables, budgets)
        facts = RunFacts(
            run_dir=self.run_dir, task=self.config.task.name, devices=[d.name for d in self.config.devices],
            headroom=dict(self.headroom),  # as applied (auto resolved to its share)
            stages={n: {"seconds": round(r.seconds, 2), "cached": r.cached} for n, r in self.stages.results.items()},
            seq=seqs.seq_facts(self.config, self.profile, self.seq), bench_check=self.config.bench.check,
        )  # fmt: skip
        return write_outputs(facts, tables, budgets, teacher, teacher_arch, search, bench, echo=self.echo,
                             device_results=devices)


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
            and k not in ("num_examples", "schema_version", "seconds")}


def run_pipeline(config: PipelineConfig | str | Path, out: str | Path | None = None,
                 echo: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Python API of ``kdnas-deploy run``: returns the run summary (also ``RUN_DIR/summary.json``)."""
    if not isinstance(config, PipelineConfig):
        path = Path(config)
        config = PipelineConfig.from_yaml(path)
        out = out or Path("runs") / path.stem
    if out is None:
        raise ConfigError("run_pipeline needs an output folder")
    return Pipeline(config, Path(out), echo=echo, progress=progress).run()
