"""``bench --end-to-end``: real dev-set requests replayed through tokenizer, input building and the ONNX session.

A served request pays for more than ``session.run`` at a padded shape: it is tokenised, its inputs are built,
and it runs at its own (unpadded) length. Each request here is one dev-set text (one row; a pair for pair
tasks), timed in three parts: tokenizer, input building (int64 arrays, segment ids), ``session.run``. With
``concurrency`` N, N client threads send requests to one shared session, whose intra-op threads are set to
``threads // N`` (at least 1) so the total fits the cores; the request rate is then measured over the wall.
Rows report e2e p50/p90/p99, the tokenizer's and the model's medians at the same lengths, requests per second
and the replayed length distribution; one request at a time, also the model-only median at the replayed median
length measured interleaved with the replay on the same session (``model_only_p50_ms``, ``e2e_over_model_only``)
and the tokenizer's median on the same texts back to back (``tokenize_alone_p50_ms``, warm caches).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.errors import DataError, ExportError
from kdnas_deploy.export.bench import BENCH_SCHEMA_VERSION, ort_precision
from kdnas_deploy.export.folders import ModelFolder, inspect_folder, load_tokenizer
from kdnas_deploy.limits import check_int
from kdnas_deploy.runtime.devices import require_device
from kdnas_deploy.runtime.session import make_session
from kdnas_deploy.tasks import get_task
from kdnas_deploy.tasks.lengths import BERT_MAX_LEN, length_stats, task_texts


@dataclass(frozen=True)
class E2EConfig:
    task: str
    data_dir: str | None = None
    split: str = "dev"
    requests: int = 200
    concurrency: int = 1
    threads: int = 2
    warmup: int = 10
    device: str = "cpu"
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        for name, kind in (("requests", "count"), ("concurrency", "threads"), ("threads", "threads"),
                           ("warmup", "count0")):  # fmt: skip
            check_int(f"bench --{name}", getattr(self, name), kind, ExportError)

    @property
    def session_threads(self) -> int:
        """Intra-op threads of the shared session: the cores divided among the client threads."""
        return max(1, self.threads // self.concurrency)


@dataclass
class Request:
    """One replayed request's timings (ms) and its token length."""

    tokenize_ms: float
    build_ms: float
    model_ms: float
    total_ms: float
    length: int


class Server:
    """One ONNX session and its tokenizer: what a serving process holds. :meth:`handle` serves one text."""

    def __init__(self, folder: ModelFolder, cfg: E2EConfig) -> None:
        self.folder = folder
        self.tokenizer = load_tokenizer(cfg.tokenizer or folder.path)
        self.session = make_session(folder.onnx_path, cfg.device, cfg.session_threads)
        self.names = [i.name for i in self.session.get_inputs()]
        unknown = [n for n in self.names if n not in ("input_ids", "attention_mask", "token_type_ids")]
        if unknown:
            raise ExportError(f"{folder.path}: the ONNX graph wants input(s) {', '.join(unknown)}")
        self.max_length = min(int(folder.config.get("max_position_embeddings", BERT_MAX_LEN)), BERT_MAX_LEN)
        self.encode = text_encoder(self.tokenizer, self.max_length)

    def handle(self, text: tuple[str, ...]) -> Request:
        t0 = time.perf_counter()
        input_ids, type_ids = self.encode(text)
        t1 = time.perf_counter()
        feed = self.feed(input_ids, type_ids)
        t2 = time.perf_counter()
        self.session.run(None, feed)
        t3 = time.perf_counter()
        return Request(1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (t3 - t2), 1e3 * (t3 - t0), len(input_ids))

    def feed(self, input_ids: list[int], type_ids: list[int] | None) -> dict[str, np.ndarray]:
        """The session's inputs for one tokenised request (int64 arrays of batch 1)."""
        ids = np.array(input_ids, dtype=np.int64).reshape(1, -1)
        feed = {"input_ids": ids, "attention_mask": np.ones(ids.shape, dtype=np.int64)}
        if "token_type_ids" in self.names:
            types = np.array(type_ids, dtype=np.int64).reshape(1, -1) if type_ids is not None else None
            feed["token_type_ids"] = types if types is not None else np.zeros(ids.shape, dtype=np.int64)
        return {n: feed[n] for n in self.names}


Encoder = Callable[[tuple[str, ...]], tuple[list[int], list[int] | None]]


def text_encoder(tokenizer: Any, max_length: int) -> Encoder:
    """``text -> (input_ids, token_type_ids)`` as a server would tokenise one request.

    A fast tokenizer is served through its Rust tokenizer (``backend_tokenizer``, public API of
    ``PreTrainedTokenizerFast``), copied once with truncation at ``max_length`` and no padding: the same ids as
    ``tokenizer(*text, truncation=True, max_length=max_length)`` (tested, single texts and pairs), at 0.13
    instead of 0.22 ms per SST-2 sentence (measured, 2-core Xeon), because the Python wrapper applies its
    truncation and padding settings and builds a ``BatchEncoding`` on every call. ``encode_batch_fast`` (public
    since tokenizers 0.21) skips the character offsets a server does not use: 0.046 instead of 0.051 ms per
    SST-2 sentence (medians of 5 x 500, measured interleaved, Xeon model 207). Slow tokenizers use the call.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:

        def call(text: tuple[str, ...]) -> tuple[list[int], list[int] | None]:
            enc = tokenizer(*text, truncation=True, max_length=max_length)
            return enc["input_ids"], enc.get("token_type_ids")

        return call
    from tokenizers import Tokenizer

    rust = Tokenizer.from_str(backend.to_str())
    rust.enable_truncation(max_length)
    rust.no_padding()

    def encode(text: tuple[str, ...]) -> tuple[list[int], list[int] | None]:
        enc = rust.encode_batch_fast([text[0] if len(text) == 1 else text])[0]
        return enc.ids, enc.type_ids

    return encode


def load_requests(cfg: E2EConfig) -> list[tuple[str, ...]]:
    """``cfg.requests`` texts of the task's split, in order (cycled when the split is shorter)."""
    texts = task_texts(get_task(cfg.task, cfg.data_dir), cfg.split)
    if not texts:
        raise DataError(f"task {cfg.task!r} split {cfg.split!r} has no texts")
    return [texts[i % len(texts)] for i in range(cfg.requests)]


def replay(server: Server, texts: Sequence[tuple[str, ...]], concurrency: int) -> tuple[list[Request], float]:
    """Serve ``texts`` (one at a time, or from ``concurrency`` client threads); the requests and the wall (s)."""
    if concurrency <= 1:
        t0 = time.perf_counter()
        done = [server.handle(t) for t in texts]
        return done, time.perf_counter() - t0
    results: list[Request | None] = [None] * len(texts)
    cursor = iter(range(len(texts)))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client() -> None:
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            try:
                results[i] = server.handle(texts[i])
            except BaseException as exc:  # surfaced in the calling thread below
                errors.append(exc)
                return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return [r for r in results if r is not None], wall


MODEL_ONLY_BLOCKS = 5  # replay chunks, each followed by as many model-only runs (concurrency 1)


@dataclass(frozen=True)
class Interleaved:
    """What :func:`replay_beside_model_only` measured in one window: the requests, the replay's wall (s), and the
    warm figures beside them: bare ``session.run`` times (ms) at the replayed median ``length`` and the tokenizer
    alone (ms), back to back on the same texts."""

    done: list[Request]
    wall_s: float
    model_only_ms: list[float]
    length: int
    tokenize_alone_ms: list[float]


def replay_beside_model_only(server: Server, texts: Sequence[tuple[str, ...]],
                             blocks: int = MODEL_ONLY_BLOCKS) -> Interleaved:  # fmt: skip
    """One request at a time, in ``blocks`` chunks each followed by as many bare ``session.run`` calls on the
    same session at the replayed median length (the model-only figure of the same window), then by the chunk's
    texts tokenised back to back. The machine drifts between states over minutes (a model-only median taken
    after the replay read 0.35 ms where the replay's own model calls read 0.50 ms, 2026-12-07, EPYC family 26),
    so the figures are measured interleaved. The tokenizer alone is the warm-cache figure: in a served request
    it runs right after the previous request's model, which evicts its tables (AMX Xeon family 6 model 167, 2 MB
    of L2 a core, SST-2 dev: 0.050 ms alone, 0.116 ms after a session run of a 0.66-ms student, 0.124 ms after
    a 16-MB memory sweep; 2026-12-08), so ``tokenize_p50_ms`` over ``tokenize_alone_p50_ms`` is that cost."""
    encoded = [server.encode(t) for t in texts]
    length = int(np.median([len(ids) for ids, _ in encoded]))
    ids, types = min(encoded, key=lambda e: abs(len(e[0]) - length))  # a real request of that length
    feed = server.feed(ids, types)
    done: list[Request] = []
    model_only: list[float] = []
    tokenize_alone: list[float] = []
    wall = 0.0
    for chunk in np.array_split(np.arange(len(texts)), max(1, min(blocks, len(texts)))):
        part, w = replay(server, [texts[i] for i in chunk], 1)
        done, wall = done + part, wall + w
        for _ in chunk:
            t0 = time.perf_counter()
            server.session.run(None, feed)
            model_only.append(1e3 * (time.perf_counter() - t0))
        for i in chunk:
            t0 = time.perf_counter()
            server.encode(texts[i])
            tokenize_alone.append(1e3 * (time.perf_counter() - t0))
    return Interleaved(done, wall, model_only, len(ids), tokenize_alone)


def _pct(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values, dtype=float), q)), 4)


def e2e_row(folder: ModelFolder, cfg: E2EConfig, done: Sequence[Request], wall_s: float,
            beside: Interleaved | None = None) -> dict[str, Any]:  # fmt: skip
    """One row; ``beside`` (:func:`replay_beside_model_only`) adds the model-only median measured beside the
    replay, the end-to-end p50 over it and the tokenizer's warm median."""
    total = [r.total_ms for r in done]
    lengths = np.asarray([r.length for r in done])
    stats = length_stats(lengths)
    same = same_length_spread(done, int(stats["p50"]))
    return {
        "schema_version": BENCH_SCHEMA_VERSION,
        "path": str(folder.path),
        "runtime": folder.runtime,
        "precision": ort_precision(folder),
        "device": cfg.device,
        "mode": "end-to-end",
        "task": cfg.task,
        "split": cfg.split,
        "batch": 1,
        "threads": cfg.threads,
        "session_threads": cfg.session_threads,
        "concurrency": cfg.concurrency,
        "requests": len(done),
        "e2e_p50_ms": _pct(total, 50),
        "e2e_p90_ms": _pct(total, 90),
        "e2e_p99_ms": _pct(total, 99),
        "e2e_mean_ms": round(float(np.mean(total)), 4),
        "requests_per_s": round(len(done) / wall_s, 3) if wall_s > 0 else None,
        "tokenize_p50_ms": _pct([r.tokenize_ms for r in done], 50),
        "build_p50_ms": _pct([r.build_ms for r in done], 50),
        "model_p50_ms": _pct([r.model_ms for r in done], 50),
        "model_p99_ms": _pct([r.model_ms for r in done], 99),
        "e2e_over_model_p50": round(_pct(total, 50) / max(_pct([r.model_ms for r in done], 50), 1e-9), 3),
        "length_p50": stats["p50"],
        "length_p95": stats["p95"],
        "length_mean": stats["mean"],
        "length_max": stats["max"],
        **same,
        **({"model_only_length": beside.length, "model_only_p50_ms": _pct(beside.model_only_ms, 50),
            "e2e_over_model_only": round(_pct(total, 50) / max(_pct(beside.model_only_ms, 50), 1e-9), 3),
            "tokenize_alone_p50_ms": _pct(beside.tokenize_alone_ms, 50)}
           if beside else {}),
    }  # fmt: skip


def same_length_spread(done: Sequence[Request], length: int, band: int = 2) -> dict[str, Any]:
    """p99 / p50 of the requests within ``band`` tokens of ``length``: the server's own tail, without the spread
    of the replayed lengths (a 55-token sentence takes about twice a 24-token one in a small model)."""
    near = [r.total_ms for r in done if abs(r.length - length) <= band]
    ratio = round(_pct(near, 99) / max(_pct(near, 50), 1e-9), 3) if len(near) >= 20 else None
    return {
        "same_length_requests": len(near),
        "same_length_band": [length - band, length + band],
        "same_length_p99_over_p50": ratio,
    }


def run_e2e(paths: Sequence[str | Path], cfg: E2EConfig) -> list[dict[str, Any]]:
    """One end-to-end row per ONNX folder (see module doc). Task, texts and folders are checked first."""
    if not paths:
        raise ExportError("bench needs at least one model folder")
    require_device(cfg.device, need_torch=False)
    folders = [inspect_folder(p) for p in paths]
    for f in folders:
        if f.runtime != "onnxruntime":
            raise ExportError(f"{f.path}: --end-to-end serves ONNX folders (export it first: kdnas-deploy export)")
    texts = load_requests(cfg)
    rows = []
    for folder in folders:
        server = Server(folder, cfg)
        for t in texts[: cfg.warmup]:
            server.handle(t)
        if cfg.concurrency == 1:
            beside = replay_beside_model_only(server, texts)
            rows.append(e2e_row(folder, cfg, beside.done, beside.wall_s, beside))
        else:
            done, wall = replay(server, texts, cfg.concurrency)
            rows.append(e2e_row(folder, cfg, done, wall))
    return rows


def format_e2e(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of end-to-end rows."""
    head = ["model", "prec", "conc", "e2e p50", "p90", "p99", "tok p50", "model p50", "e2e/model-only", "req/s",
            "len p50/p95"]
    lines = [[Path(r["path"]).name, r["precision"], str(r["concurrency"]), f"{r['e2e_p50_ms']:.2f}",
              f"{r['e2e_p90_ms']:.2f}", f"{r['e2e_p99_ms']:.2f}", f"{r['tokenize_p50_ms']:.3f}",
              f"{r['model_p50_ms']:.2f}", f"{r['e2e_over_model_only']:.3f}" if "e2e_over_model_only" in r else "-",
              f"{r['requests_per_s']:.1f}", f"{r['length_p50']}/{r['length_p95']}"]
             for r in rows]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*["-" * w for w in widths]), *(fmt.format(*c) for c in lines)])
