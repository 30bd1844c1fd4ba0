"""``bench``: Hugging Face folders (PyTorch eager) and ONNX folders (ONNX Runtime) timed side by side.

All models are loaded in one process and timed interleaved (:func:`kdnas_deploy.runtime.timing.interleave`): in
each round every model, after a short idle gap (so the previous model's spinning threads go to sleep), runs
``block_warmup`` untimed calls (waking its threads and bringing its weights back into cache) and then a block of
timed calls, so slow drifts of the machine hit all models alike. Samples are summarised with
:class:`kdnas_deploy.runtime.timing.Timing` (median, p10, p90).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.errors import ExportError
from kdnas_deploy.export.folders import ModelFolder, inspect_folder, load_hf_classifier
from kdnas_deploy.latency.table import check_threads, load_table
from kdnas_deploy.limits import check_int
from kdnas_deploy.runtime.devices import require_device
from kdnas_deploy.runtime.inputs import DEFAULT_VOCAB, model_inputs
from kdnas_deploy.runtime.runners import Runner, ort_runner, torch_runner
from kdnas_deploy.runtime.session import make_session
from kdnas_deploy.runtime.timing import PAUSE_MS, Timing
from kdnas_deploy.runtime.timing import interleave as interleave_fns

BENCH_SCHEMA_VERSION = 1
# p90 / p10 of one model's samples above which its timing window was disturbed. Measured on the 2-core EPYC and
# Xeon machines: a quiet window keeps every model within 5-11% (p90/p10 <= 1.11); with a 20-ms pause_ms, the
# spinning threads of the ORT model timed before put an ORT student at 2.56-6.68 ms (2.6x) in the same rounds.
DISTURBED_RATIO = 1.5

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    batch: int = 1
    seq: int = 128
    threads: int = 2
    device: str = "cpu"
    rounds: int = 10
    block: int = 5
    warmup: int = 5
    # ONNX folders: cpu-ort or cpu-openvino (the folder's IR, else model.onnx); None: the backend each folder was
    # exported for (its export_report.json; cpu-ort without one), so an OpenVINO export is timed as it serves
    backend: str | None = None
    pause_ms: float = PAUSE_MS  # idle gap before each block (why: runtime.timing.PAUSE_MS)
    block_warmup: int = 2  # untimed calls opening each block (wake threads, bring weights back into cache)

    def __post_init__(self) -> None:
        for name, kind in (("batch", "batch"), ("seq", "seq"), ("threads", "threads"), ("rounds", "count"),
                           ("block", "count")):  # fmt: skip
            check_int(f"bench {name}", getattr(self, name), kind, ExportError)
        if self.pause_ms < 0 or self.block_warmup < 0:
            raise ExportError("bench pause_ms and block_warmup must be >= 0")
        if self.seq > 512:
            raise ExportError(f"bench seq {self.seq} exceeds BERT's 512 positions")


@dataclass
class BenchModel:
    """One model of a bench: its folder, precision, runner and the samples taken so far."""

    folder: ModelFolder
    precision: str
    runner: Runner
    runtime: str = ""  # what ran it (onnxruntime, openvino, pytorch); empty: the folder's runtime
    samples_ms: list[float] = field(default_factory=list)


def _inputs(folder: ModelFolder, cfg: BenchConfig) -> dict[str, np.ndarray]:
    return model_inputs(cfg.batch, cfg.seq, vocab_size=int(folder.config.get("vocab_size", DEFAULT_VOCAB)))


def _export_report(folder: ModelFolder) -> dict[str, Any]:
    """The folder's ``export_report.json`` ({} when it has none or it is not a JSON object)."""
    try:
        report = json.loads((folder.path / "export_report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def onnx_precision(folder: ModelFolder, from_report: bool = True) -> str:
    """The export report's precision, else (or with ``from_report`` False) inferred from the graph's operators
    and initializers."""
    recorded = _export_report(folder).get("precision") if from_report else None
    if recorded is not None:
        return str(recorded)
    import onnx

    graph = onnx.load(str(folder.onnx_path), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    if ops & {"QAttention", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "DynamicQuantizeLinear"}:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer):
        return "fp16"
    return "fp32"


def export_backend(folder: ModelFolder) -> str | None:
    """The backend an ONNX folder was exported for (``export_report.json``'s ``backend``), None if unrecorded."""
    backend = _export_report(folder).get("backend")
    return backend if isinstance(backend, str) else None


def ort_precision(folder: ModelFolder) -> str:
    """The precision ONNX Runtime runs a folder's ``model.onnx`` at: the export's, except for an OpenVINO export,
    whose precision (bf16, NNCF int8) is its IR's, not the ONNX graph's."""
    return onnx_precision(folder, from_report=export_backend(folder) != "cpu-openvino")


def _ort_model(folder: ModelFolder, cfg: BenchConfig) -> BenchModel:
    if (cfg.backend or export_backend(folder)) == "cpu-openvino":
        return _openvino_model(folder, cfg)
    sess = make_session(folder.onnx_path, cfg.device, cfg.threads)
    runner = ort_runner(sess, _inputs(folder, cfg), cfg.device, where=f"{folder.path}: the ONNX graph")
    precision = ort_precision(folder)
    return BenchModel(folder, "fp32" if precision == "bf16" else precision, runner, runtime="onnxruntime")


def _openvino_model(folder: ModelFolder, cfg: BenchConfig) -> BenchModel:
    """OpenVINO on the folder's IR (else its ``model.onnx``) at the export's precision when OpenVINO serves it
    (fp32, bf16, int8 of an NNCF IR), else f32 of the same file (an ORT int8 graph is labelled int8)."""
    from kdnas_deploy.runtime.openvino import open_openvino, ov_runner

    precision = onnx_precision(folder)
    ov_precision = precision if precision in ("fp32", "bf16") or _nncf_int8(folder) else "fp32"
    session = open_openvino(folder.path, cfg.threads, ov_precision)
    runner = ov_runner(session, _inputs(folder, cfg), f"{folder.path}: OpenVINO")
    return BenchModel(folder, precision, runner, runtime="openvino")


def _nncf_int8(folder: ModelFolder) -> bool:
    """Whether the folder's export quantised its OpenVINO IR (``export --backend cpu-openvino --quantize int8``)."""
    return bool((_export_report(folder).get("openvino") or {}).get("quantization"))


def _torch_model(folder: ModelFolder, cfg: BenchConfig) -> BenchModel:
    import torch

    torch.set_num_threads(cfg.threads)
    model = load_hf_classifier(folder.path).to(torch.device("cuda" if cfg.device == "cuda" else "cpu"))
    data = _inputs(folder, cfg)
    if model.config.type_vocab_size < 1 or getattr(model.config, "model_type", "") in ("distilbert", "roberta"):
        data.pop("token_type_ids")
    return BenchModel(folder, "fp32", torch_runner(model, data, cfg.device))


# runtime name -> builder of a BenchModel
RUNTIMES: dict[str, Callable[[ModelFolder, BenchConfig], BenchModel]] = {
    "onnxruntime": _ort_model,
    "pytorch": _torch_model,
}


def _predict_ms(table: Any, folder: ModelFolder, cfg: BenchConfig, precision: str) -> float | None:
    """The table's prediction for an ONNX folder of the table's precision; ``None`` when not comparable
    (other precision, not a BERT-like config, or a shape outside the table's space)."""
    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.errors import KdnasError

    table_precision = getattr(table, "precision", None)
    if table_precision is not None and table_precision != precision:
        return None
    try:
        arch = Architecture.from_config(_Namespace(folder.config))
        return float(np.asarray(table.predict(arch, batch=cfg.batch, seq=cfg.seq), dtype=float).ravel()[0])
    except KdnasError:
        return None


class _Namespace:
    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)


def _open_table(table: str | Path | Any, cfg: BenchConfig) -> Any:
    """A path, or an already loaded table (anything with ``predict(arch, batch=, seq=)``), checked to have
    been measured at the bench's thread count; None without a table."""
    if not table:
        return None
    lat_table = table if hasattr(table, "predict") else load_table(table)
    check_threads(lat_table, cfg.threads)
    return lat_table


def run_bench(paths: list[str | Path], cfg: BenchConfig, table: str | Path | Any = None,
              progress: bool = True, keep_samples: bool = False) -> list[dict[str, Any]]:
    """Time every model interleaved; one row per model (the first path is the speedup baseline).

    With a latency table, ONNX rows get ``predicted_ms`` (the table prices the deployed ONNX path, not PyTorch,
    so PyTorch rows get ``None``). ``keep_samples`` adds each row's samples in time order (``samples_ms``, one
    block of ``cfg.block`` per round), for per-round comparisons."""
    if not paths:
        raise ExportError("bench needs at least one model folder")
    require_device(cfg.device, need_torch=False)
    folders = [inspect_folder(p) for p in paths]
    if cfg.device == "cuda" and any(f.runtime == "pytorch" for f in folders):
        require_device("cuda", need_torch=True)
    lat_table = _open_table(table, cfg)
    models = [RUNTIMES[f.runtime](f, cfg) for f in folders]
    for m, samples in zip(models, interleave([m.runner for m in models], cfg, progress), strict=True):
        m.samples_ms.extend(samples)
    rows = [_row(m, cfg, lat_table, keep_samples) for m in models]
    base = rows[0]["median_ms"]
    for row, m in zip(rows, models, strict=True):
        row["speedup_vs_first"] = round(base / row["median_ms"], 3)
        row.update(paired_speedup(models[0].samples_ms, m.samples_ms, cfg.block))
    flag_disturbed(rows)
    return rows


def flag_disturbed(rows: list[dict[str, Any]]) -> list[str]:
    """Mark each row whose p90 is over :data:`DISTURBED_RATIO` times its p10 (``disturbed``, with the ratio as
    ``p90_over_p10``) and warn: its median, and its speedups, carry stalls of the machine, not the model. The
    names of the disturbed rows."""
    bad = []
    for row in rows:
        ratio = row["p90_ms"] / row["p10_ms"] if row.get("p10_ms") else float("inf")
        row["p90_over_p10"] = round(ratio, 3)
        row["disturbed"] = ratio > DISTURBED_RATIO
        if row["disturbed"]:
            bad.append(Path(row["path"]).name)
            log.warning("bench: %s ran %.2f-%.2f ms (p10-p90, %.1fx): its timing window was disturbed (another "
                        "job, or threads of the model timed before it still spinning); time it again",
                        row["path"], row["p10_ms"], row["p90_ms"], ratio)
    return bad


def paired_speedup(first: list[float], other: list[float], block: int) -> dict[str, float]:
    """The speedup over the first model round by round: the median, p10 and p90 of (first's block median /
    this model's block median) over the rounds. Each round times both within ~0.1 s, so a machine state change
    between rounds (measured here: 0.39 vs 0.57 ms probe readings, minutes apart) moves both sides of a ratio
    alike, where the ratio of the two overall medians moves with the share of rounds each state held."""
    import numpy as np

    rounds = min(len(first), len(other)) // block
    if rounds == 0:
        return {}
    a = np.median(np.asarray(first[: rounds * block]).reshape(rounds, block), axis=1)
    b = np.median(np.asarray(other[: rounds * block]).reshape(rounds, block), axis=1)
    ratio = a / b
    return {"speedup_paired": round(float(np.median(ratio)), 3),
            "speedup_paired_p10": round(float(np.percentile(ratio, 10)), 3),
            "speedup_paired_p90": round(float(np.percentile(ratio, 90)), 3)}  # fmt: skip


def interleave(runners: list[Runner], cfg: BenchConfig, progress: bool = True) -> list[list[float]]:
    """Time ``runners`` interleaved (:func:`kdnas_deploy.runtime.timing.interleave`, with ``cfg``'s rounds,
    blocks, warm-up and gap). Samples in ms, in time order, one list per runner."""
    return interleave_fns([r.fn for r in runners], cfg.rounds, cfg.block, cfg.warmup, cfg.pause_ms, cfg.block_warmup,
                          progress)  # fmt: skip


def _row(m: BenchModel, cfg: BenchConfig, lat_table: Any, keep_samples: bool) -> dict[str, Any]:
    t = Timing.from_samples(m.samples_ms)
    row: dict[str, Any] = {
        "schema_version": BENCH_SCHEMA_VERSION,
        "path": str(m.folder.path),
        "runtime": m.runtime or m.folder.runtime,
        "precision": m.precision,
        "device": cfg.device,
        "batch": cfg.batch,
        "seq_len": cfg.seq,
        "threads": cfg.threads,
        "median_ms": round(t.median_ms, 4),
        "p10_ms": round(t.p10_ms, 4),
        "p90_ms": round(t.p90_ms, 4),
        "spread_pct": round(t.spread_pct, 2),
        "reps": t.reps,
        "sequences_per_s": round(1000.0 * cfg.batch / t.median_ms, 3),
    }
    if keep_samples:
        row["samples_ms"] = [round(x, 4) for x in m.samples_ms]
    if lat_table is not None:
        pred = _predict_ms(lat_table, m.folder, cfg, m.precision) if m.folder.runtime == "onnxruntime" else None
        row["predicted_ms"] = round(pred, 4) if pred is not None else None
    return row


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain-text table: the first model (e.g. the teacher) against the others, with the speedup."""
    has_pred = any("predicted_ms" in r for r in rows)
    head = ["model", "runtime", "prec", "median ms", "p10-p90 ms", "seq/s", "speedup"]
    if has_pred:
        head.insert(5, "predicted ms")
    lines = []
    for i, r in enumerate(rows):
        name = Path(r["path"]).name + (" (baseline)" if i == 0 else "")
        cells = [name, r["runtime"], r["precision"], f"{r['median_ms']:.2f}",
                 f"{r['p10_ms']:.2f}-{r['p90_ms']:.2f}", f"{r['sequences_per_s']:.1f}", f"{r['speedup_vs_first']:.2f}x"]
        if has_pred:
            p = r.get("predicted_ms")
            cells.insert(5, "-" if p is None else f"{p:.2f}")
        lines.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*["-" * w for w in widths])]
    out += [fmt.format(*c) for c in lines]
    return "\n".join(out)
