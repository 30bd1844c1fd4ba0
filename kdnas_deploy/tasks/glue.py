"""GLUE tasks: from a local directory in the original GLUE layout, or ``datasets.load_dataset('glue')``.

Local TSVs are read with quoting disabled (GLUE text contains stray quotes) and ``utf-8-sig`` (MRPC has a
byte-order mark). CoLA has no header row.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdnas_deploy.errors import DataError
from kdnas_deploy.tasks.base import Task

if TYPE_CHECKING:  # pragma: no cover
    import datasets

GLUE_DIR_ENV = "KDNAS_GLUE_DIR"
csv.field_size_limit(1 << 24)


@dataclass(frozen=True)
class GlueSpec:
    folder: str
    text_fields: tuple[str, ...]
    metrics: tuple[str, ...]
    num_labels: int
    # local TSV: column (name or index when headerless) of each text field, then of the label
    columns: tuple[str | int, ...]
    header: bool = True
    label_names: tuple[str, ...] | None = None  # string labels in the TSV, in HF label order
    dev_file: str = "dev.tsv"
    hf_dev: str = "validation"
    hf_fields: tuple[str, ...] | None = None  # HF column names when they differ from ours

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


_NLI2 = ("entailment", "not_entailment")
GLUE_TASKS: dict[str, GlueSpec] = {
    "sst2": GlueSpec("SST-2", ("sentence",), ("accuracy",), 2, ("sentence", "label")),
    "cola": GlueSpec("CoLA", ("sentence",), ("matthews_correlation",), 2, (3, 1), header=False),
    "mrpc": GlueSpec(
        "MRPC", ("sentence1", "sentence2"), ("f1", "accuracy"), 2, ("#1 String", "#2 String", "Quality")
    ),
    "stsb": GlueSpec(
        "STS-B", ("sentence1", "sentence2"), ("pearson", "spearmanr"), 1, ("sentence1", "sentence2", "score")
    ),
    "qqp": GlueSpec(
        "QQP", ("question1", "question2"), ("accuracy", "f1"), 2, ("question1", "question2", "is_duplicate")
    ),
    "qnli": GlueSpec(
        "QNLI",
        ("question", "sentence"),
        ("accuracy",),
        2,
        ("question", "sentence", "label"),
        label_names=_NLI2,
    ),
    "rte": GlueSpec(
        "RTE",
        ("sentence1", "sentence2"),
        ("accuracy",),
        2,
        ("sentence1", "sentence2", "label"),
        label_names=_NLI2,
    ),
    "wnli": GlueSpec(
        "WNLI", ("sentence1", "sentence2"), ("accuracy",), 2, ("sentence1", "sentence2", "label")
    ),
    "mnli": GlueSpec(
        "MNLI",
        ("premise", "hypothesis"),
        ("accuracy",),
        3,
        ("sentence1", "sentence2", "gold_label"),
        label_names=("entailment", "neutral", "contradiction"),
        dev_file="dev_matched.tsv",
        hf_dev="validation_matched",
    ),
}


def resolve_glue_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    if data_dir is not None:
        path = Path(data_dir)
        if not path.is_dir():
            raise DataError(f"--data-dir {path} is not a directory")
        return path
    env = os.environ.get(GLUE_DIR_ENV)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise DataError(f"{GLUE_DIR_ENV}={env} is not a directory")
        return path
    return None


def read_glue_tsv(path: Path, spec: GlueSpec, name: str) -> dict[str, list]:
    if not path.is_file():
        raise DataError(f"GLUE file not found: {path} (expected the original GLUE layout)")
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {os.strerror(exc.errno) if exc.errno else exc}") from None
    if not rows:
        raise DataError(f"{path} is empty")
    if spec.header:
        header, rows = rows[0], rows[1:]
        try:
            idx = [header.index(c) for c in spec.columns]  # type: ignore[arg-type]
        except ValueError:
            raise DataError(f"{path} lacks column(s) {list(spec.columns)} (header: {header})") from None
    else:
        idx = [int(c) for c in spec.columns]
    width = max(idx) + 1
    out: dict[str, list] = {f: [] for f in (*spec.text_fields, "label")}
    label_index = {n: i for i, n in enumerate(spec.label_names)} if spec.label_names else None
    for lineno, row in enumerate(rows, start=2 if spec.header else 1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) < width:
            raise DataError(f"{path}:{lineno}: expected at least {width} columns, got {len(row)}")
        for field_name, i in zip(spec.text_fields, idx[:-1], strict=True):
            out[field_name].append(row[i])
        raw = row[idx[-1]].strip()
        try:
            if spec.is_regression:
                label: float | int = float(raw)
            elif label_index is not None:
                label = label_index[raw]
            else:
                label = int(raw)
        except (ValueError, KeyError):
            raise DataError(f"{path}:{lineno}: bad label {raw!r} for task {name}") from None
        out["label"].append(label)
    return out


def _local_loader(name: str, spec: GlueSpec, root: Path):
    def load(split: str) -> datasets.Dataset:
        import datasets

        folder = root / spec.folder
        if not folder.is_dir():
            raise DataError(f"GLUE folder {folder} not found (task {name})")
        fname = "train.tsv" if split == "train" else spec.dev_file
        data = read_glue_tsv(folder / fname, spec, name)
        features = {f: datasets.Value("string") for f in spec.text_fields}
        features["label"] = datasets.Value("float32" if spec.is_regression else "int64")
        return datasets.Dataset.from_dict(data, features=datasets.Features(features))

    return load


OFFLINE_ENVS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
HUB_HOST = ("huggingface.co", 443)


def _offline_reason() -> str | None:
    """Why the hub cannot be used (an offline switch, or no route to it within a second), else None: a
    ``datasets`` call offline retries for half a minute before failing."""
    for env in OFFLINE_ENVS:
        if os.environ.get(env, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{env} is set"
    import socket

    try:
        socket.create_connection(HUB_HOST, timeout=1.0).close()
    except OSError:
        return f"{HUB_HOST[0]} is unreachable"
    return None


def _cached_locally(name: str) -> bool:
    """True when ``datasets`` has this GLUE config in its local cache (so offline loading can work)."""
    root = Path(os.environ.get("HF_DATASETS_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache"
                / "huggingface")) / "datasets")  # fmt: skip
    return any(root.glob(f"*glue*/{name}")) if root.is_dir() else False


def _hub_loader(name: str, spec: GlueSpec):
    def load(split: str) -> datasets.Dataset:
        reason = None if _cached_locally(name) else _offline_reason()
        if reason is not None:  # checked before importing datasets (seconds): fail fast when offline
            raise DataError(
                f"GLUE {name!r} is not available offline ({reason}) and not cached: pass --data-dir DIR "
                f"(the original GLUE layout) or set {GLUE_DIR_ENV}"
            )
        import datasets
        hf_split = "train" if split == "train" else spec.hf_dev
        try:
            ds = datasets.load_dataset("glue", name, split=hf_split)
        except Exception as exc:  # noqa: BLE001 - any hub/network failure is a data error here
            raise DataError(
                f"cannot load GLUE {name!r} from the hub ({type(exc).__name__}); "
                f"pass --data-dir DIR or set {GLUE_DIR_ENV}"
            ) from None
        keep = [c for c in ds.column_names if c in (*spec.text_fields, "label")]
        return ds.select_columns(keep)

    return load


def glue_task(name: str, data_dir: str | os.PathLike[str] | None = None) -> Task:
    spec = GLUE_TASKS[name]
    root = resolve_glue_dir(data_dir)
    loader = _local_loader(name, spec, root) if root is not None else _hub_loader(name, spec)
    return Task(
        name=name,
        num_labels=spec.num_labels,
        is_regression=spec.is_regression,
        main_metric=spec.metrics[0],
        text_fields=spec.text_fields,
        metric_names=spec.metrics,
        label_names=spec.label_names,
        source=f"glue:{root / spec.folder}" if root is not None else f"hub:glue/{name}",
        loader=loader,
    )
