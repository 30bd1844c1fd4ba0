"""``bench``: Hugging Face folders (PyTorch eager) and ONNX folders (ONNX Runtime) timed side by side.

All models are loaded in one process and timed interleaved: in each round every model, after a short idle gap
(so the previous model's spinning threads go to sleep), runs ``block_warmup`` untimed calls (waking its threads
and bringing its weights back into cache) and then a block of timed calls, so slow drifts of the machine hit all
models alike. Samples are summarised with :class:`kdnas_deploy.timing.Timing` (median, p10, p90).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.errors import ExportError, ModelError, TableError
from kdnas_deploy.export.runtime import ModelFolder, inspect_folder, make_session, require_device, session_runner

BENCH_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BenchConfig:
    batch: int = 1
    seq: int = 128
    threads: int = 2
    device: str = "cpu"
    rounds: int = 10
    block: int = 5
    warmup: int = 5
    pause_ms: float = 20.0  # idle gap before each block: the previous model's spinning threads go to sleep
    block_warmup: int = 2  # untimed calls opening each block (wake threads, bring weights back into cache)

    def __post_init__(self) -> None:
        for name in ("batch", "seq", "threads", "rounds", "block"):
            if getattr(self, name) < 1:
                raise ExportError(f"bench {name} must be >= 1, got {getattr(self, name)}")
        if self.pause_ms < 0 or self.block_warmup < 0:
            raise ExportError("bench pause_ms and block_warmup must be >= 0")
        if self.seq > 512:
            raise ExportError(f"bench seq {self.seq} exceeds BERT's 512 positions")


@dataclass
class Runner:
    """One model ready to run: ``fn()`` does one forward pass on fixed inputs."""

    folder: ModelFolder
    precision: str
    fn: Callable[[], Any]
    samples_ms: list[float] = field(default_factory=list)


def _inputs(folder: ModelFolder, cfg: BenchConfig) -> dict[str, np.ndarray]:
    vocab = int(folder.config.get("vocab_size", 30522))
    rng = np.random.default_rng(0)
    ids = rng.integers(min(1000, vocab - 1), vocab, (cfg.batch, cfg.seq), dtype=np.int64)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }


def onnx_precision(folder: ModelFolder) -> str:
    """The export report's precision, else inferred from the graph's operators and initializers."""
    report = folder.path / "export_report.json"
    if report.is_file():
        try:
            return str(json.loads(report.read_text(encoding="utf-8"))["precision"])
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    import onnx

    graph = onnx.load(str(folder.onnx_path), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    if ops & {"QAttention", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "DynamicQuantizeLinear"}:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer):
        return "fp16"
    return "fp32"


def _ort_runner(folder: ModelFolder, cfg: BenchConfig) -> Runner:
    sess = make_session(folder.onnx_path, cfg.device, cfg.threads)
    names = [i.name for i in sess.get_inputs()]
    data = _inputs(folder, cfg)
    missing = [n for n in names if n not in data]
    if missing:
        raise ModelError(f"{folder.path}: ONNX input(s) {', '.join(missing)} are not BERT classifier inputs")
    feed = {n: data[n] for n in names}
    return Runner(folder, onnx_precision(folder), session_runner(sess, feed, cfg.device))


def _torch_runner(folder: ModelFolder, cfg: BenchConfig) -> Runner:
    import torch

    from kdnas_deploy.export.runtime import load_hf_classifier

    torch.set_num_threads(cfg.threads)
    model = load_hf_classifier(folder.path)
    dev = torch.device("cuda" if cfg.device == "cuda" else "cpu")
    model = model.to(dev)
    data = {k: torch.as_tensor(v, device=dev) for k, v in _inputs(folder, cfg).items()}
    if model.config.type_vocab_size < 1 or getattr(model.config, "model_type", "") in ("distilbert", "roberta"):
        data.pop("token_type_ids")

    def run() -> None:
        with torch.inference_mode():
            model(**data)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return Runner(folder, "fp32", run)


# runtime name -> builder of a Runner
RUNNERS: dict[str, Callable[[ModelFolder, BenchConfig], Runner]] = {
    "onnxruntime": _ort_runner,
    "pytorch": _torch_runner,
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


def load_table(path: str | Path) -> Any:
    if not Path(path).is_file():
        raise TableError(f"latency table not found: {path}")
    try:
        from kdnas_deploy.latency.table import LatencyTable
    except ImportError:
        raise TableError("latency tables are not available in this build (kdnas_deploy.latency.table)") from None

    return LatencyTable.load(path)


def run_bench(paths: list[str | Path], cfg: BenchConfig, table: str | Path | Any = None,
              progress: bool = True, keep_samples: bool = False) -> list[dict[str, Any]]:
    """Time every model interleaved; one row per model (the first path is the speedup baseline).

    With a latency table, ONNX rows get ``predicted_ms`` (the table prices the deployed ONNX path, not PyTorch,
    so PyTorch rows get ``None``). ``keep_samples`` adds each row's samples in time order (``samples_ms``, one
    block of ``cfg.block`` per round), for per-round comparisons."""
    from tqdm.auto import tqdm

    from kdnas_deploy.timing import Timing, time_callable

    if not paths:
        raise ExportError("bench needs at least one model folder")
    require_device(cfg.device, need_torch=False)
    folders = [inspect_folder(p) for p in paths]
    if cfg.device == "cuda" and any(f.runtime == "pytorch" for f in folders):
        require_device("cuda", need_torch=True)
    # a path, or an already loaded table (anything with ``predict(arch, batch=, seq=)``)
    lat_table = table if hasattr(table, "predict") else (load_table(table) if table else None)
    runners = [RUNNERS[f.runtime](f, cfg) for f in folders]
    for r in runners:  # warm up each model once, alone
        time_callable(r.fn, warmup=cfg.warmup, reps=1)
    for _ in tqdm(range(cfg.rounds), desc="bench rounds", disable=not progress, unit="round"):
        for r in runners:
            time.sleep(cfg.pause_ms / 1000.0)
            for _ in range(cfg.block_warmup):
                r.fn()  # untimed: wakes this model's threads, reloads its weights after the others ran
            r.samples_ms.extend(time_callable(r.fn, warmup=0, reps=1).median_ms for _ in range(cfg.block))
    rows = []
    for r in runners:
        t = Timing.from_samples(r.samples_ms)
        row: dict[str, Any] = {
            "schema_version": BENCH_SCHEMA_VERSION,
            "path": str(r.folder.path),
            "runtime": r.folder.runtime,
            "precision": r.precision,
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
            row["samples_ms"] = [round(x, 4) for x in r.samples_ms]
        if lat_table is not None:
            pred = _predict_ms(lat_table, r.folder, cfg, r.precision) if r.folder.runtime == "onnxruntime" else None
            row["predicted_ms"] = round(pred, 4) if pred is not None else None
        rows.append(row)
    base = rows[0]["median_ms"]
    for row in rows:
        row["speedup_vs_first"] = round(base / row["median_ms"], 3)
    return rows


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
