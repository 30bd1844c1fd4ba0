"""``export``: a Hugging Face sequence classifier -> a validated, optimized ONNX folder with a report.

The folder is built under a temporary name and published only when every check passed (no half-written
output). It holds ``model.onnx``, ``config.json``, the tokenizer, ``ort_config.json`` (when optimized),
``export_config.json`` (the resolved options) and ``export_report.json``.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import ExportError, ModelError, TableError
from kdnas_deploy.export.agreement import DEFAULT_MIN_AGREEMENT, judge_agreement, parity_agreement
from kdnas_deploy.export.card import write_card
from kdnas_deploy.export.folders import ModelFolder, inspect_folder, load_hf_classifier, load_tokenizer
from kdnas_deploy.export.serving import (
    OPENVINO,
    calibration_feeds,
    open_served,
    openvino_settings,
    require_backend,
    resolve_export_backend,
    served_runner,
    write_served_artifact,
)
from kdnas_deploy.export.validate import ParityTolerance, check_metric, check_parity, parity_to_dict
from kdnas_deploy.io import atomic_directory, atomic_write_json
from kdnas_deploy.latency.table import check_threads, load_table
from kdnas_deploy.limits import check_int
from kdnas_deploy.runtime.deploy import DEFAULT_INT8_SCHEME, DeployConfig, attention_fused, deploy, quiet_loggers
from kdnas_deploy.runtime.devices import require_device
from kdnas_deploy.runtime.inputs import DEFAULT_VOCAB
from kdnas_deploy.runtime.timing import time_callable

REPORT_SCHEMA_VERSION = 1
METRIC_MAX_LENGTH = 128  # check_metric's token length: NNCF calibrates int8 at the length the metric is checked
REPORT_FILE = "export_report.json"
CONFIG_FILE = "export_config.json"
QUANTIZE_TO_PRECISION = {"none": "fp32", "int8": "int8"}


@dataclass(frozen=True)
class ExportOptions:
    """Resolved options of one export (saved as ``export_config.json``)."""

    optimize: str = "O2"
    quantize: str = "none"
    int8_scheme: str = DEFAULT_INT8_SCHEME
    device: str = "cpu"
    fp16: bool = False
    backend: str | None = None  # the runtime the folder is for (None: the device's); cpu-openvino adds the IR
    bf16: bool = False  # cpu-openvino only: OpenVINO's bf16 inference precision (the graph stays fp32)
    task: str | None = None
    data_dir: str | None = None
    max_metric_drop: float = 1.0
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_eval_examples: int | None = None
    atol: float | None = None
    rtol: float | None = None
    threads: int = 2
    bench_batch: int = 1
    bench_seq: int = 128
    bench_reps: int = 30
    table: str | None = None
    tokenizer: str | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE_TO_PRECISION:
            raise ExportError(f"unknown quantization {self.quantize!r} (choose from none, int8)")
        if self.fp16 and self.quantize != "none":
            raise ExportError("--fp16 and --quantize int8 exclude each other")
        if self.bf16 and (self.fp16 or self.quantize != "none"):
            raise ExportError("bf16 excludes --fp16 and --quantize int8")
        resolve_export_backend(self.device, self.backend, self.precision)
        for name, kind in (("threads", "threads"), ("bench_batch", "batch"), ("bench_seq", "seq"),
                           ("bench_reps", "count0")):  # fmt: skip
            check_int(name, getattr(self, name), kind, ExportError)
        for name in ("atol", "rtol"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ExportError(f"--{name} must be >= 0")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ExportError(f"--min-agreement must be in [0, 1], got {self.min_agreement!r}")
        if self.bench_reps < 0:
            raise ExportError("bench_reps must be >= 0 (0 skips the latency measurement)")

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else QUANTIZE_TO_PRECISION[self.quantize]

    @property
    def backend_name(self) -> str:
        return resolve_export_backend(self.device, self.backend, self.precision)

    @property
    def openvino_int8(self) -> bool:
        return self.precision == "int8" and self.backend_name == OPENVINO

    def deploy_config(self) -> DeployConfig:
        # bf16 is OpenVINO's inference precision of the fp32 graph, OpenVINO int8 NNCF's quantisation of its IR
        graph = "fp32" if self.bf16 or self.openvino_int8 else self.precision
        return DeployConfig(optimize=self.optimize, precision=graph, device=self.device, int8_scheme=self.int8_scheme)

    def tolerance(self) -> ParityTolerance:
        base = ParityTolerance.for_precision(self.precision)
        return ParityTolerance(self.atol if self.atol is not None else base.atol,
                               self.rtol if self.rtol is not None else base.rtol)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_exportable(model_type: str) -> None:
    """Refuse architectures that optimum cannot export for text classification or ORT cannot fuse."""
    import optimum.exporters.onnx.model_configs  # noqa: F401 - registers the ONNX export configs
    from optimum.exporters.tasks import TasksManager

    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(model_type, exporter="onnx",
                                                                library_name="transformers")
    except KeyError:
        tasks = {}
    if "text-classification" not in tasks:
        raise ModelError(f"unsupported architecture {model_type!r}: optimum cannot export it for text classification")


def _file_sizes(folder: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted(folder.iterdir()) if f.is_file()}


def measure_onnx_latency(onnx_path: Path, device: str, threads: int, batch: int, seq: int, reps: int,
                         vocab_size: int = DEFAULT_VOCAB, backend: str = "cpu-ort",
                         precision: str = "fp32") -> dict[str, Any]:  # fmt: skip
    """Latency of the served model at (batch, seq) with full-length random token ids (median and deciles,
    ms): one ONNX Runtime session, or OpenVINO on the folder's IR for ``cpu-openvino``."""
    sess = open_served(backend, Path(onnx_path).parent, device, threads, precision)
    runner = served_runner(backend, sess, batch, seq, vocab_size, device)
    t = time_callable(runner.fn, warmup=5, reps=reps)
    runner.close()
    return {"batch": batch, "seq_len": seq, "threads": threads, "device": device, "backend": backend,
            **t.to_dict(), "sequences_per_s": round(1000.0 * batch / t.median_ms, 3)}


def predict_latency(table_path: str, arch: Any, batch: int, seq: int, precision: str | None = None,
                    threads: int | None = None, backend: str | None = None) -> dict[str, Any]:
    """The latency table's prediction for ``arch``; TableError when the table prices another backend or
    precision or was measured at another thread count than ``threads``."""
    import numpy as np

    table = load_table(table_path)
    if threads is not None:
        check_threads(table, threads)
    if backend and table.backend != backend:
        raise TableError(f"table {table_path} prices backend {table.backend}, this export is for {backend}")
    table_precision = table.precision
    if precision and table_precision and table_precision != precision:
        raise TableError(f"table {table_path} prices {table_precision} graphs, this export is {precision}")
    ms = float(np.asarray(table.predict(arch, batch=batch, seq=seq), dtype=float).ravel()[0])
    return {"table": str(table_path), "table_precision": table_precision, "batch": batch, "seq_len": seq,
            "predicted_ms": round(ms, 4)}


def _quiet_libraries() -> None:
    """Only the libraries' own loggers (never the root logger's level)."""
    for name in ("optimum", "transformers", "onnxruntime"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def _check_request(model_dir: Path, out_dir: Path, options: ExportOptions) -> tuple[DeployConfig, ModelFolder]:
    """Every refusal that needs no model loaded: options, output folder, device, architecture."""
    config = options.deploy_config()  # validates optimize/precision/device combinations
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} is a file, not a folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not options.force:
        raise ExportError(f"{out_dir} already exists and is not empty (use --force to replace it)")
    if options.quantize == "int8" and not options.task and not options.force:
        raise ExportError("--quantize int8 needs --task to check the dev-set metric (or --force to skip the check)")
    if options.bf16 and not options.task and not options.force:
        raise ExportError("bf16 needs --metric-task to check the dev-set metric (or --force to skip the check)")
    if options.openvino_int8 and not options.task:
        raise ExportError("--backend cpu-openvino --quantize int8 needs --metric-task: NNCF calibrates the int8 model"
                          " on the task's train split")  # fmt: skip
    require_device(config.device)
    require_backend(options.backend_name, options.precision)
    folder = inspect_folder(model_dir)
    check_exportable(folder.model_type)
    return config, folder


def _calibration(tokenizer: Any, options: ExportOptions) -> Any:
    """The task's calibration requests for OpenVINO int8 (read only when the export quantises)."""
    task = options.task
    if not task:
        return None
    return lambda: calibration_feeds(tokenizer, task, options.data_dir, max_length=METRIC_MAX_LENGTH)


def _architecture(model: Any) -> Any:
    from kdnas_deploy.arch import Architecture

    try:
        return Architecture.from_config(model.config)
    except Exception:  # noqa: BLE001 - non-BERT configs still export; they just have no table key
        return None


def export_model(model_dir: str | Path, out_dir: str | Path, options: ExportOptions,
                 log: Any = print) -> dict[str, Any]:
    """Export, validate, measure and publish; returns the report (also written as ``export_report.json``)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config, folder = _check_request(model_dir, out_dir, options)
    _quiet_libraries()
    model = load_hf_classifier(model_dir)
    tokenizer = load_tokenizer(options.tokenizer or model_dir)
    arch = _architecture(model)
    predicted = None
    if options.table:  # before the heavy work: a table that cannot price this model fails fast
        if arch is None:
            raise ExportError("--table needs a BERT-like model (layers/hidden/heads/ffn in its config)")
        predicted = predict_latency(options.table, arch, options.bench_batch, options.bench_seq, options.precision,
                                    threads=options.threads, backend=options.backend_name)
    with atomic_directory(out_dir, force=options.force) as tmp:
        log(f"exporting {model_dir} ({folder.model_type}, {config.optimize}, {options.precision}, "
            f"{options.backend_name})")
        with quiet_loggers():
            deployed = deploy(model, tmp, config, tokenizer)
            served = write_served_artifact(options.backend_name, deployed.onnx_path, options.precision,
                                           _calibration(tokenizer, options))  # fmt: skip
        if served is not None:
            served["config"] = openvino_settings(options.threads, options.precision)
        tokenizer.save_pretrained(str(tmp))
        report = _validate_and_measure(model, tokenizer, deployed, options, log)
        if predicted and report["latency_measured"]:
            predicted["measured_over_predicted"] = round(
                report["latency_measured"]["median_ms"] / predicted["predicted_ms"], 4)
        atomic_write_json(tmp / CONFIG_FILE, {"schema_version": REPORT_SCHEMA_VERSION, "source": str(model_dir),
                                              **options.to_dict()})
        report = {
            "schema_version": REPORT_SCHEMA_VERSION,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "source_model": str(model_dir.resolve()),
            "model_type": folder.model_type,
            "architecture": arch.to_dict() if arch else None,
            "deploy_config": config.to_dict(),
            "backend": options.backend_name,
            "precision": options.precision,
            **({"openvino": served} if served else {}),
            **report,
            "latency_predicted": predicted,
            "host": {"machine": platform.machine(), "processor": platform.processor() or platform.machine()},
        }
        report["file_sizes_bytes"] = _file_sizes(tmp)  # everything but the report itself
        atomic_write_json(tmp / REPORT_FILE, report)
        write_card(tmp, card_facts(report, model, source=str(model_dir), name=out_dir.name))
    report["output_dir"] = str(out_dir)
    return report


def _read_record(folder: Path) -> tuple[str, dict[str, Any]]:
    import json

    for name in ("distill_record.json", "teacher_record.json"):
        try:
            rec = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict):
            return name, rec
    return "", {}


def _source_facts(model_dir: Path) -> dict[str, Any]:
    """Teacher and task of the folder the export came from (its distill or teacher record)."""
    name, rec = _read_record(model_dir)
    task = rec.get("task") if isinstance(rec.get("task"), dict) else {}
    facts: dict[str, Any] = {}
    if isinstance(task.get("name"), str):
        facts["task"] = task["name"]
        if isinstance(task.get("main_metric"), str):
            facts["main_metric"] = task["main_metric"]
    if name == "distill_record.json" and isinstance(rec.get("teacher"), str):  # a teacher's record names
        facts["teacher"] = rec["teacher"]  # its backbone. Its metrics may be of a held-out train slice: left out
    return facts


def card_facts(report: dict[str, Any], model: Any, source: str, name: str) -> dict[str, Any]:
    """The model card's facts from an export report (nothing the report does not know)."""
    facts: dict[str, Any] = {"format": "onnx", "name": name, "architecture": report.get("architecture"),
                             "precision": report.get("precision"),
                             "optimize": (report.get("deploy_config") or {}).get("optimize")}
    try:
        facts["params"] = int(sum(p.numel() for p in model.parameters()))
    except (AttributeError, TypeError):
        pass
    facts.update(_source_facts(Path(source)))
    parity = report.get("parity") or {}
    diffs = [c.get("max_abs_diff") for c in parity.get("cases", []) if c.get("max_abs_diff") is not None]
    if diffs:
        facts["parity"] = {"max_abs_diff": max(diffs), "tolerance": parity.get("tolerance")}
    check = report.get("metric_check")
    if check:
        facts["metric_check"] = check
        facts.setdefault("task", check.get("task"))
        if check.get("metric") and check.get("after") is not None:
            facts.update(metrics={check["metric"]: check["after"]}, main_metric=check["metric"], split="dev")
            if check.get("baseline") is not None:
                facts["baseline"] = {check["metric"]: check["baseline"]}
    if report.get("agreement"):
        facts["agreement"] = report["agreement"]
    if report.get("openvino"):
        facts["openvino"] = report["openvino"]
    lat = report.get("latency_measured")
    if lat:
        facts["latency"] = {**lat, "kind": "measured"}
        host = report.get("host") or {}
        facts["device"] = ", ".join(str(v) for v in (lat.get("device"), host.get("processor")) if v)
    return facts


def _validate_and_measure(model: Any, tokenizer: Any, deployed: Any, options: ExportOptions,
                          log: Any) -> dict[str, Any]:  # fmt: skip
    """Fusion count, parity against PyTorch, the task metric (with ``--task``) and the measured latency."""
    config = deployed.config
    num_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    fused = deployed.fused_ops
    fused_ok = attention_fused(fused, num_layers) if num_layers else None
    if fused_ok is False:
        log(f"warning: attention fused in {fused.get('Attention', 0) + fused.get('QAttention', 0)} of "
            f"{num_layers} layers (the latency table prices this shape through the same path)")
    precision, backend = options.precision, options.backend_name
    log(f"checking parity against PyTorch ({backend}, {precision})")
    session = open_served(backend, deployed.folder, config.device, options.threads, precision)
    tol = options.tolerance()
    cases = check_parity(model, tokenizer, session, precision, tol)
    parity = parity_to_dict(cases, precision, tol)
    if not parity["ok"]:
        worst = max(c.max_abs_diff for c in cases)
        log(f"warning: {precision} logits differ from PyTorch by up to {worst:.3g} (beyond atol {tol.atol:g}"
            f" + rtol {tol.rtol:g}*|logit|): judged by prediction agreement and the dev metric instead")
    metric = None
    if options.task:
        log(f"evaluating {options.task} dev before/after export")
        metric = check_metric(model, tokenizer, session, options.task, options.data_dir,
                              options.max_metric_drop, options.force,
                              max_examples=options.max_eval_examples).to_dict()
    del session
    regression = int(getattr(model.config, "num_labels", 2) or 2) == 1
    found = metric["agreement"] if metric else (None if regression else parity_agreement(cases))
    agreement = judge_agreement(found, precision, options.min_agreement)
    if agreement is not None:
        log(f"prediction agreement with PyTorch ({agreement['kind']}, {agreement['source']}): "
            f"{100 * agreement['value']:.1f}% of {agreement['examples']}")
    measured = None
    if options.bench_reps:
        log(f"measuring latency (batch {options.bench_batch}, seq {options.bench_seq}, {options.threads} threads)")
        measured = measure_onnx_latency(deployed.onnx_path, config.device, options.threads, options.bench_batch,
                                        options.bench_seq, options.bench_reps,
                                        int(getattr(model.config, "vocab_size", DEFAULT_VOCAB)), backend, precision)
    return {"fused_ops": fused, "attention_fused": fused_ok, "parity": parity, "metric_check": metric,
            "agreement": agreement, "latency_measured": measured}
