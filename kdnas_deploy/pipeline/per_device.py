"""One artifact per device: ``run`` exports the searched student for every device of the config, at that
device's precision, benches each beside the fp32 teacher on its device, and checks each budget by measurement.

Why: the search makes one student meet every device's budget by *prediction*, but a two-device config
(``configs/two-devices.yaml``: fp32 and int8 on one CPU) used to export and bench only the first device's
artifact: the fp32 student measured 3.89 ms against its 4.16 ms budget, the int8 budget (2.44 ms) was never
measured, and the report said "meets the budget". A device this machine cannot run (``cuda`` without a GPU) is
listed as not measured, with the reason, instead of failing the run after the search.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import ConfigError, DeviceError, MetricDropError, SearchError
from kdnas_deploy.io import atomic_write_json
from kdnas_deploy.pipeline.config import DeviceSection, PipelineConfig
from kdnas_deploy.pipeline.stages import StageRunner
from kdnas_deploy.pipeline.summary import anchored_prediction, budget_check, machine_anchor
from kdnas_deploy.pipeline.tables import predictions_for


@dataclass(frozen=True)
class DeviceExport:
    """How the student is exported and benched for one device."""

    name: str
    device: str
    precision: str
    quantize: str  # the export's --quantize: int8 for an int8 device
    fp16: bool  # a CUDA fp16 device
    suffix: str  # stage/folder suffix: "" for the first device (the layout of one-device runs), "-NAME" after
    backend: str | None = None  # devices[].backend (None: the device's default, cpu-ort / cuda-ort)

    @property
    def bf16(self) -> bool:  # OpenVINO's bf16 inference precision of the fp32 graph
        return self.precision == "bf16"

    @property
    def serves_ort(self) -> bool:
        return self.backend in (None, "cpu-ort", "cuda-ort")

    @property
    def student_stage(self) -> str:
        return f"export-student{self.suffix}"

    @property
    def bench_stage(self) -> str:
        return f"bench{self.suffix}"


def device_exports(config: PipelineConfig) -> list[DeviceExport]:
    """One :class:`DeviceExport` per device, in config order."""
    out = []
    for i, dev in enumerate(config.devices):
        quantize = "int8" if dev.precision == "int8" else config.export.quantize
        if quantize == "int8" and dev.precision != "int8":
            raise ConfigError(f"export.quantize: int8, but device {dev.name!r} is {dev.precision}: each device is "
                              "exported at its own precision (devices[].precision); leave export.quantize out")
        out.append(DeviceExport(dev.name, dev.device, dev.precision, quantize, dev.precision == "fp16",
                                "" if i == 0 else f"-{dev.name}", dev.backend))  # fmt: skip
    return out


def unavailable_reason(dev: DeviceSection | DeviceExport) -> str | None:
    """Why this machine cannot run ``dev``'s artifact (None when it can): e.g. no CUDA provider here."""
    from kdnas_deploy.runtime.devices import require_device

    try:
        require_device(dev.device)
    except DeviceError as exc:
        return str(exc)
    return None


def teacher_table(config: PipelineConfig, tables: dict[str, str]) -> str | None:
    """The table that prices the teacher's export (fp32 ONNX on the CPU): the first CPU fp32 device's, if any."""
    for dev in config.devices:
        if dev.device == "cpu" and dev.precision == "fp32":
            return tables[dev.name]
    return None


def raw_predictions(table_precision: str | None, rows: list[dict[str, Any]], raw: list[float | None]) -> list:
    """The table's raw prediction only for the rows of the table's precision (an int8 table does not price
    the fp32 teacher)."""
    return [r if table_precision in (None, row.get("precision")) else None for row, r in zip(rows, raw, strict=True)]


def device_result(target: DeviceExport, budget_ms: float, bench: dict[str, Any], bench_check: str) -> dict[str, Any]:
    """The device's budget checked on its own bench: measured, predicted (anchored as the bench's probe said),
    the verdict, and the speedup over the fp32 teacher measured in the same window."""
    teacher_row, student_row = bench["rows"][0], bench["rows"][-1]
    anchor = machine_anchor(bench)
    drift = anchor["factor"] if anchor["applied"] else 1.0
    measured = float(student_row["median_ms"])
    check = budget_check(bench_check, bench.get("e2e"), measured, drift, budget_ms)
    return {
        "name": target.name, "device": target.device, "backend": target.backend or "default",
        "precision": target.precision, "measured": True,
        "onnx": student_row["path"], "budget_ms": budget_ms, "measured_ms": measured,
        "predicted_ms": anchored_prediction(student_row, drift),
        "predicted_raw_ms": student_row.get("predicted_raw_ms"),
        "speedup_vs_teacher_fp32": round(float(teacher_row["median_ms"]) / measured, 3),
        "machine_anchor": anchor["statement"], "budget_checked_on": check["budget_checked_on"],
        "checked_ms": check["checked_ms"], "meets_budget_measured": check["meets_budget_measured"],
        "meets_budget_at_table_state": check["meets_budget_at_table_state"],
    }  # fmt: skip


def skipped_result(target: DeviceExport, budget_ms: float, reason: str) -> dict[str, Any]:
    return {"name": target.name, "device": target.device, "precision": target.precision, "measured": False,
            "budget_ms": budget_ms, "reason": reason, "meets_budget_measured": None}  # fmt: skip


class DeployStages:
    """The export and bench stages of :class:`~kdnas_deploy.pipeline.run.Pipeline` (a mixin: the pipeline
    supplies the config, the run folder, the stage runner and the length measured at)."""

    config: PipelineConfig
    run_dir: Path
    stages: StageRunner
    echo: Callable[[str], None]
    progress: bool
    backend_picks: dict[str, dict[str, Any]]

    @property
    def bench_seq(self) -> int:  # pragma: no cover - the pipeline's
        raise NotImplementedError

    def latency_stage(self, dev: DeviceSection) -> dict[str, Any]:  # pragma: no cover - the pipeline's
        raise NotImplementedError

    def export_student(self, target: DeviceExport, student_dir: str, table: str,
                       upstream: str) -> tuple[dict[str, Any], DeviceExport, str, list[str]]:  # fmt: skip
        """The student's export for ``target``: ``(export, target, table, fallbacks)``. A ``backend: auto`` device
        whose export fails the dev-metric check is exported on the next fastest backend of its pick, priced by
        that backend's table (the pick is by speed, the metric decides what ships): on the AMD EPYC family 26 the
        NNCF int8 IR of an STS-B student lost 2.70 pearson points where ONNX Runtime's int8 of the same student
        passed (before NNCF left the task head in fp32: :data:`~kdnas_deploy.runtime.openvino.FP32_SCOPE`).
        ``fallbacks`` says why each faster backend was passed over; the last failure is raised."""
        pick = self.backend_picks.get(target.name) or {}
        order = sorted(pick.get("medians_ms", {}), key=pick.get("medians_ms", {}).get)
        fallbacks: list[str] = []
        while True:
            try:
                return self.export_stage(f"student{target.suffix}", student_dir, table, upstream, target), target, \
                    table, fallbacks
            except MetricDropError as exc:
                rest = order[order.index(target.backend) + 1:] if target.backend in order else []
                if not rest:
                    raise
                fallbacks.append(f"{target.backend}: {exc}")
                self.echo(f"[{target.student_stage}] {target.backend}: {exc}; exporting on {rest[0]}, the next "
                          "fastest backend of the pick")  # fmt: skip
                dev = next(d for d in self.config.devices if d.name == target.name)
                table = self.latency_stage(dev.on_path(rest[0], dev.precision, rest[0]))["table"]
                target = dataclasses.replace(target, backend=rest[0])

    def export_stage(self, name: str, model_dir: str, table: str | None, upstream: str,
                     target: DeviceExport | None = None) -> dict[str, Any]:
        """Export ``model_dir`` into ``onnx/NAME``: at ``target``'s precision (the student, per device) or fp32 on
        the CPU (the teacher)."""
        cfg = self.config
        quantize, fp16, device = (target.quantize, target.fp16, target.device) if target else ("none", False, "cpu")
        backend, bf16 = (target.backend, target.bf16) if target else (None, False)
        inputs = {"export": {**cfg.export.__dict__, "quantize": quantize}, "model": model_dir, "table": table,
                  "upstream": upstream, "bench": {"batch": cfg.bench.batch, "seq": self.bench_seq,
                                                  "threads": cfg.bench.threads}, "task": cfg.task.__dict__}
        if fp16 or bf16 or device != "cpu" or backend is not None:
            inputs["device"] = {"device": device, "fp16": fp16, "bf16": bf16, "backend": backend}

        def work() -> dict[str, Any]:
            from kdnas_deploy.export.exporter import ExportOptions, export_model

            out = self.run_dir / "onnx" / name
            if out.is_dir():  # the stage's own folder, left by a killed run: replaced without --force, which would
                shutil.rmtree(out)  # also switch the export's dev-metric check off
            opts = ExportOptions(optimize=cfg.export.optimize, quantize=quantize, device=device, fp16=fp16,
                                 task=cfg.task.name, data_dir=cfg.task.data_dir, threads=cfg.bench.threads,
                                 bench_batch=cfg.bench.batch, bench_seq=self.bench_seq, table=table,
                                 max_metric_drop=cfg.export.max_metric_drop, backend=backend, bf16=bf16)  # fmt: skip
            report = export_model(model_dir, out, opts, log=self.echo)
            return {"onnx": str(out), "report": str(out / "export_report.json"),
                    "fused_ops": report.get("fused_ops", {})}

        stage = target.student_stage if target else f"export-{name}"
        return self.stages.run(stage, inputs, work).outputs

    def bench_stage(self, paths: list[str], table: str, upstream: list[str],
                    target: DeviceExport | None = None) -> dict[str, Any]:
        """Teacher and student interleaved on ``target``'s device, predictions re-anchored in the same window."""
        cfg = self.config
        suffix, device = (target.suffix, target.device) if target else ("", "cpu")
        backend = target.backend if target else None
        inputs = {"bench": {**cfg.bench.__dict__, "seq": self.bench_seq}, "paths": paths, "table": table,
                  "upstream": upstream, "anchored": True, "task": cfg.task.__dict__}
        if device != "cpu" or backend is not None:
            inputs["device"] = {"device": device, "backend": backend}

        def work() -> dict[str, Any]:
            import shutil

            from kdnas_deploy.export.bench import BenchConfig, run_bench
            from kdnas_deploy.latency.table import LatencyTable
            from kdnas_deploy.latency.validate import recalibrate

            # The machine drifts between a fast and a slow state; re-anchor a copy of the table with the probe
            # measured in the same window as the bench, so prediction and measurement are comparable.
            anchored = self.run_dir / f"bench_table{suffix}.json"
            shutil.copyfile(table, anchored)
            scale = recalibrate(LatencyTable.load(anchored), anchored, readings=6, log=self.echo)
            anchor = LatencyTable.load(anchored).calibration.get("anchor")  # the decision the probe's line gave
            bench_cfg = BenchConfig(batch=cfg.bench.batch, seq=self.bench_seq, threads=cfg.bench.threads,
                                    device=device, backend=backend)  # fmt: skip
            rows = run_bench(paths, bench_cfg, table=anchored, progress=self.progress)
            raw = raw_predictions(LatencyTable.load(table).precision, rows,
                                  predictions_for(table, paths, cfg.bench.batch, self.bench_seq))
            factor = float(anchor["factor"]) if anchor and anchor.get("applied") else 1.0
            for row, raw_ms in zip(rows, raw, strict=True):  # one factor for every model: the probe's
                row["predicted_raw_ms"] = raw_ms
                row["predicted_ms"] = anchored_prediction(row, factor)
            out = self.run_dir / f"bench{suffix}.json"
            atomic_write_json(out, rows)
            # end to end through the ORT CPU session (export/e2e.py); other backends: the fixed-shape figure only
            ort_cpu = device == "cpu" and (target is None or target.serves_ort)
            e2e = self._e2e_row(paths[-1], suffix) if ort_cpu else None
            return {"bench": str(out), "rows": rows, "probe_scale": round(scale, 4), "anchor": anchor,
                    "anchored_table": str(anchored), "e2e": e2e}

        return self.stages.run(target.bench_stage if target else "bench", inputs, work).outputs

    def _e2e_row(self, student_onnx: str, suffix: str = "") -> dict[str, Any]:
        """The student served end to end: the task's dev texts through tokenizer and session, one at a time."""
        from kdnas_deploy.export.e2e import E2EConfig, run_e2e

        cfg = self.config
        e2e_cfg = E2EConfig(task=cfg.task.name, data_dir=cfg.task.data_dir, requests=cfg.bench.e2e_requests,
                            threads=cfg.bench.threads)  # fmt: skip
        row = run_e2e([student_onnx], e2e_cfg)[0]
        atomic_write_json(self.run_dir / f"bench_e2e{suffix}.json", [row])
        return row

    def deploy_stages(self, search: dict[str, Any], teacher: dict[str, Any], tables: dict[str, str],
                      budgets: list[tuple[str, float]]) -> tuple[dict, dict, list[dict[str, Any]]]:
        """The teacher exported once (fp32, CPU); the student exported and benched for every device this machine
        can run, each checked against its own budget (:mod:`kdnas_deploy.pipeline.per_device`). Returns the first
        device's export and bench (the run's headline) and one result per device."""
        keys = self.stages.results
        teacher_onnx = None
        first: tuple[dict, dict] | None = None
        results = []
        for target, (table, budget) in zip(device_exports(self.config), budgets, strict=True):
            reason = unavailable_reason(target)
            if reason is not None:
                self.echo(f"[{target.student_stage}] not measured on this machine: {reason}")
                results.append(skipped_result(target, budget, reason))
                continue
            student, target, table, fallbacks = self.export_student(target, search["student"], table,
                                                                    keys["search"].key)  # fmt: skip
            if teacher_onnx is None:  # after the first student: the layout and stage order of one-device runs
                teacher_onnx = self.export_stage("teacher", teacher["teacher"], teacher_table(self.config, tables),
                                                 keys["teacher"].key)  # fmt: skip
            bench = self.bench_stage([teacher_onnx["onnx"], student["onnx"]], table,
                                     [keys[target.student_stage].key, keys["export-teacher"].key], target)
            results.append(device_result(target, budget, bench, self.config.bench.check))
            results[-1]["backend_pick"] = self.backend_picks.get(target.name)
            if fallbacks:
                results[-1]["backend_fallbacks"] = fallbacks
            first = first or (student, bench)
        if first is None:
            raise SearchError("no device of the config can be measured on this machine: "
                              + "; ".join(f"{r['name']}: {r['reason']}" for r in results))  # fmt: skip
        return first[0], first[1], results

