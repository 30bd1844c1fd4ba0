"""Tokenised data sets, length-bucketed batches with dynamic padding, and batched prediction."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdnas_deploy.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import datasets
    import torch

    from kdnas_deploy.tasks import Task

BUCKET_MULTIPLIER = 50  # batches sorted by length inside windows of this many batches


@dataclass
class Encoded:
    """Token ids of a data set, unpadded, plus labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: np.ndarray
    fingerprint: str

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def dataset_fingerprint(ds: datasets.Dataset, task: Task) -> str:
    """A hash of the examples themselves (texts and labels), stable across processes and subsets."""
    h = hashlib.sha256()
    for field in (*task.text_fields, "label"):
        h.update(field.encode())
        for value in ds[field]:
            h.update(repr(value).encode("utf-8"))
            h.update(b"\x00")
    return h.hexdigest()


def encode(ds: datasets.Dataset, task: Task, tokenizer: Any, max_seq_len: int) -> Encoded:
    missing = [c for c in (*task.text_fields, "label") if c not in ds.column_names]
    if missing:
        raise DataError(f"data set lacks column(s) {', '.join(missing)} needed by task {task.name!r}")
    if len(ds) == 0:
        raise DataError("data set is empty")
    texts = [list(ds[f]) for f in task.text_fields]
    enc = tokenizer(*texts, truncation=True, max_length=max_seq_len, return_attention_mask=False)
    token_types = enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
    labels = np.asarray(list(ds["label"]), dtype=np.float32 if task.is_regression else np.int64)
    if not task.is_regression:
        bad = labels[(labels < 0) | (labels >= task.num_labels)]
        if len(bad):
            raise DataError(f"label {int(bad[0])} is outside the task's {task.num_labels} classes")
    return Encoded(list(enc["input_ids"]), list(token_types), labels, dataset_fingerprint(ds, task))


def augment_masked(enc: Encoded, copies: int, rate: float, mask_id: int, special_ids: set[int], seed: int) -> Encoded:
    """``enc`` plus ``copies`` perturbed copies of every example: each non-special token replaced by
    ``mask_id`` with probability ``rate`` (at least one per example with such tokens). The teacher labels the
    copies during distillation, so the student sees it on more inputs than the training set has (a cheap
    stand-in for TinyBERT's data augmentation); gold labels are kept for the hard-label loss."""
    if copies <= 0:
        return enc
    if not 0 < rate < 1:
        raise DataError(f"augmentation mask rate must be in (0, 1), got {rate}")
    rng = np.random.default_rng([seed, 104729])
    specials = np.fromiter(special_ids, dtype=np.int64, count=len(special_ids))
    ids, types, labels = list(enc.input_ids), list(enc.token_type_ids), [enc.labels]
    for _ in range(copies):
        for row, tt in zip(enc.input_ids, enc.token_type_ids, strict=True):
            arr = np.asarray(row)
            free = np.flatnonzero(~np.isin(arr, specials))
            new = arr.copy()
            if len(free):
                hit = free[rng.random(len(free)) < rate]
                new[hit if len(hit) else rng.choice(free, 1)] = mask_id
            ids.append(new.tolist())
            types.append(tt)
        labels.append(enc.labels)
    digest = hashlib.sha256(f"{enc.fingerprint}|mask|{copies}|{rate}|{mask_id}|{seed}".encode()).hexdigest()
    return Encoded(ids, types, np.concatenate(labels), digest)


def bucket_batches(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, shuffle: bool = True
) -> list[np.ndarray]:
    """Batches of similar lengths. Shuffled (seeded by ``seed, epoch``) or, for prediction, sorted."""
    n = len(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(n)
    window = batch_size * BUCKET_MULTIPLIER
    batches: list[np.ndarray] = []
    for start in range(0, n, window):
        chunk = perm[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def collate(enc: Encoded, idx: np.ndarray, pad_id: int = 0) -> dict[str, torch.Tensor]:
    import torch

    width = max(len(enc.input_ids[i]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(idx), width), dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        n = len(enc.input_ids[i])
        ids[row, :n] = torch.tensor(enc.input_ids[i])
        types[row, :n] = torch.tensor(enc.token_type_ids[i])
        mask[row, :n] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def predict(
    model: Any, enc: Encoded, batch_size: int = 128, progress: bool = False, desc: str = "eval"
) -> np.ndarray:
    """Logits for every example of ``enc`` in its original order."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    out: np.ndarray | None = None
    batches = bucket_batches(enc.lengths, batch_size, 0, 0, shuffle=False)
    with torch.inference_mode():
        for idx in tqdm(batches, desc=desc, disable=not progress, leave=False):
            logits = model(**collate(enc, idx)).logits.float().numpy()
            if out is None:
                out = np.zeros((len(enc), logits.shape[-1]), dtype=np.float32)
            out[idx] = logits
    assert out is not None
    return out


def evaluate_logits(task: Task, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    preds = logits[:, 0] if task.is_regression else logits
    return task.compute_metrics(preds, labels)


def publishable(folder: Path) -> None:
    """Give a published folder ordinary permissions (temp dirs/files are created 0700/0600)."""
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o755 if f.is_dir() else 0o644)
