"""Teacher outputs on a data set, computed once and cached (fp16, unpadded), or run live per batch.

A cache entry ``<cache_dir>/<key>/`` holds ``logits.npy`` (N x C), one ``hidden_<l>.npy`` (tokens x H) per
requested teacher hidden state ``l`` (0 = embeddings), ``offsets.npy`` (N+1 token offsets) and
``meta.json``, written last with each file's size and crc32: an entry that fails that check (truncated,
overwritten) is rebuilt with one warning line. The free space is checked and the files preallocated before
anything is computed, so a full disk is one line, never a SIGBUS through the memory map. The key hashes the
teacher's weights and config, the examples (texts and labels), ``max_seq_len`` and the layer set, so the same
proxy set never runs the teacher twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdnas_deploy.distill.data import Encoded, bucket_batches, collate
from kdnas_deploy.io import atomic_write_json, check_free_space, make_dirs, writing

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel

CACHE_SCHEMA_VERSION = 2  # 2: file sizes and crc32 in meta.json
_WEIGHT_HASHES: dict[tuple[str, float, int], str] = {}
_VERIFIED: set[tuple[str, float]] = set()
log = logging.getLogger(__name__)


def teacher_fingerprint(teacher_dir: str | Path) -> str:
    """sha256 of the teacher's config and weight files (memoised per path, mtime and size)."""
    folder = Path(teacher_dir)
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        f = folder / name
        if not f.is_file():
            continue
        stat = f.stat()
        key = (str(f.resolve()), stat.st_mtime, stat.st_size)
        if key not in _WEIGHT_HASHES:
            fh = hashlib.sha256()
            with open(f, "rb") as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    fh.update(chunk)
            _WEIGHT_HASHES[key] = fh.hexdigest()
        h.update(name.encode() + _WEIGHT_HASHES[key].encode())
    return h.hexdigest()


@dataclass
class TeacherBatch:
    logits: torch.Tensor  # (B, C) float32
    hidden: dict[int, torch.Tensor]  # layer -> (B, S, H) float32, padded to the batch width


class LiveTeacher:
    """Runs the teacher on each batch."""

    def __init__(self, teacher: PreTrainedModel, layers: tuple[int, ...]):
        self.teacher, self.layers = teacher.eval(), layers
        self.size_bytes = 0
        self.hit = False

    def batch(self, enc: Encoded, idx: np.ndarray, inputs: dict[str, torch.Tensor]) -> TeacherBatch:
        import torch

        with torch.inference_mode():
            out = self.teacher(**inputs, output_hidden_states=bool(self.layers))
        hidden = {layer: out.hidden_states[layer].clone() for layer in self.layers}
        return TeacherBatch(out.logits.float().clone(), hidden)


class CachedTeacher:
    """Reads teacher outputs from a cache entry (memory-mapped)."""

    def __init__(self, folder: Path, layers: tuple[int, ...], hit: bool):
        self.folder, self.layers, self.hit = folder, layers, hit
        self.logits = np.load(folder / "logits.npy", mmap_mode="r")
        self.offsets = np.load(folder / "offsets.npy")
        self.hidden = {layer: np.load(folder / f"hidden_{layer}.npy", mmap_mode="r") for layer in layers}
        self.size_bytes = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())

    def batch(self, enc: Encoded, idx: np.ndarray, inputs: dict[str, torch.Tensor]) -> TeacherBatch:
        import torch

        logits = torch.from_numpy(np.asarray(self.logits[idx], dtype=np.float32))
        width = inputs["input_ids"].shape[1]
        hidden = {}
        for layer, arr in self.hidden.items():
            block = np.zeros((len(idx), width, arr.shape[1]), dtype=np.float32)
            for row, i in enumerate(idx):
                a, b = self.offsets[i], self.offsets[i + 1]
                block[row, : b - a] = arr[a:b]
            hidden[layer] = torch.from_numpy(block)
        return TeacherBatch(logits, hidden)


def cache_key(teacher_dir: str | Path, enc: Encoded, max_seq_len: int, layers: tuple[int, ...]) -> str:
    doc = {
        "v": CACHE_SCHEMA_VERSION,
        "teacher": teacher_fingerprint(teacher_dir),
        "data": enc.fingerprint,
        "n": len(enc),
        "max_seq_len": max_seq_len,
        "layers": sorted(layers),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            crc = zlib.crc32(chunk, crc)
    return crc


def _file_sums(folder: Path) -> dict[str, dict[str, int]]:
    return {f.name: {"bytes": f.stat().st_size, "crc32": _crc32(f)} for f in sorted(folder.glob("*.npy"))}


def cache_problem(folder: Path) -> str | None:
    """Why the cache entry in ``folder`` cannot be used (None: it is whole). Checked once per process and
    ``meta.json`` version."""
    meta_file = folder / "meta.json"
    try:
        key = (str(meta_file.resolve()), meta_file.stat().st_mtime)
        if key in _VERIFIED:
            return None
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        files = meta["files"]
        for name, want in files.items():
            f = folder / name
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != want["bytes"]:
                return f"{name} has {f.stat().st_size} bytes, {want['bytes']} expected"
            if _crc32(f) != want["crc32"]:
                return f"{name} fails its checksum"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"unreadable meta.json ({type(exc).__name__})"
    _VERIFIED.add(key)
    return None


def cache_bytes(enc: Encoded, num_labels: int, hidden_size: int, layers: tuple[int, ...]) -> int:
    """Bytes of a cache entry: fp16 logits and hidden states (unpadded) and int64 offsets."""
    tokens = int(enc.lengths.sum())
    return 2 * len(enc) * max(1, num_labels) + 2 * tokens * hidden_size * len(layers) + 8 * (len(enc) + 1)


def _preallocated_memmap(path: Path, shape: tuple[int, int]) -> np.memmap:
    """A writable fp16 ``.npy`` memory map whose blocks are reserved on disk first (``posix_fallocate``):
    writing into a sparse map on a full disk kills the process with SIGBUS."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
    if hasattr(os, "posix_fallocate") and arr.nbytes:
        with open(path, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
    return arr


def _fill(teacher: PreTrainedModel, enc: Encoded, layers: tuple[int, ...], tmp: Path, batch_size: int,
          progress: bool) -> np.ndarray:  # fmt: skip
    """Run the teacher over ``enc`` into ``tmp``'s memory-mapped hidden states; returns the offsets."""
    import torch
    from tqdm.auto import tqdm

    lengths = enc.lengths
    offsets = np.zeros(len(enc) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    logits_out: np.ndarray | None = None
    hidden_out = {
        layer: _preallocated_memmap(tmp / f"hidden_{layer}.npy", (int(offsets[-1]), teacher.config.hidden_size))
        for layer in layers
    }
    teacher.eval()
    batches = bucket_batches(lengths, batch_size, 0, 0, shuffle=False)
    with torch.inference_mode():
        for idx in tqdm(batches, desc="teacher cache", disable=not progress, leave=False):
            out = teacher(**collate(enc, idx), output_hidden_states=bool(layers))
            if logits_out is None:
                logits_out = np.zeros((len(enc), out.logits.shape[-1]), dtype=np.float16)
            logits_out[idx] = out.logits.float().numpy().astype(np.float16)
            for layer in layers:
                h = out.hidden_states[layer].numpy().astype(np.float16)
                for row, i in enumerate(idx):
                    hidden_out[layer][offsets[i] : offsets[i + 1]] = h[row, : lengths[i]]
    for arr in hidden_out.values():
        arr.flush()
    del hidden_out
    np.save(tmp / "logits.npy", logits_out)
    np.save(tmp / "offsets.npy", offsets)
    return offsets


def build_or_load_cache(
    teacher: PreTrainedModel,
    teacher_dir: str | Path,
    enc: Encoded,
    max_seq_len: int,
    layers: tuple[int, ...],
    cache_dir: str | Path,
    batch_size: int = 128,
    progress: bool = True,
) -> CachedTeacher:
    key = cache_key(teacher_dir, enc, max_seq_len, layers)
    folder = Path(cache_dir) / key
    if (folder / "meta.json").is_file():
        problem = cache_problem(folder)
        if problem is None:
            return CachedTeacher(folder, layers, hit=True)
        log.warning("teacher-output cache %s is corrupt (%s); rebuilding it", folder, problem)
        with writing(folder, "remove the corrupt cache"):
            shutil.rmtree(folder)
    make_dirs(folder.parent)
    needed = cache_bytes(enc, teacher.config.num_labels, teacher.config.hidden_size, layers)
    check_free_space(folder.parent, needed + (1 << 20), "the teacher-output cache")
    with writing(folder, "create"):
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=folder.parent))
    try:
        with writing(folder):
            offsets = _fill(teacher, enc, layers, tmp, batch_size, progress)
            meta: dict[str, Any] = {
                "schema_version": CACHE_SCHEMA_VERSION,
                "key": key,
                "num_examples": len(enc),
                "num_tokens": int(offsets[-1]),
                "layers": list(layers),
                "dtype": "float16",
                "max_seq_len": max_seq_len,
                "teacher": str(teacher_dir),
                "files": _file_sums(tmp),
            }
            atomic_write_json(tmp / "meta.json", meta)
        try:
            tmp.rename(folder)
        except OSError:  # another process published the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CachedTeacher(folder, layers, hit=False)
