"""Teacher outputs on a data set, computed once and cached (fp16, unpadded), or run live per batch.

A cache entry ``<cache_dir>/<key>/`` holds ``logits.npy`` (N x C), one ``hidden_<l>.npy`` (tokens x H) per
requested teacher hidden state ``l`` (0 = embeddings), ``offsets.npy`` (N+1 token offsets) and
``meta.json``, written last. The key hashes the teacher's weights and config, the examples (texts and
labels), ``max_seq_len`` and the layer set, so the same proxy set never runs the teacher twice.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdnas_deploy.distill.data import Encoded, bucket_batches, collate
from kdnas_deploy.io import atomic_write_json

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel

CACHE_SCHEMA_VERSION = 1
_WEIGHT_HASHES: dict[tuple[str, float, int], str] = {}


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
    import torch
    from tqdm.auto import tqdm

    key = cache_key(teacher_dir, enc, max_seq_len, layers)
    folder = Path(cache_dir) / key
    if (folder / "meta.json").is_file():
        return CachedTeacher(folder, layers, hit=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=folder.parent))
    try:
        lengths = enc.lengths
        offsets = np.zeros(len(enc) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)
        logits_out: np.ndarray | None = None
        hidden_out = {
            layer: np.lib.format.open_memmap(
                tmp / f"hidden_{layer}.npy",
                mode="w+",
                dtype=np.float16,
                shape=(int(offsets[-1]), teacher.config.hidden_size),
            )
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
        meta: dict[str, Any] = {
            "schema_version": CACHE_SCHEMA_VERSION,
            "key": key,
            "num_examples": len(enc),
            "num_tokens": int(offsets[-1]),
            "layers": list(layers),
            "dtype": "float16",
            "max_seq_len": max_seq_len,
            "teacher": str(teacher_dir),
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
