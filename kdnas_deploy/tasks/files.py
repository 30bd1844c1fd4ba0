"""Tasks from CSV/TSV/JSON(L) files with named text and label columns.

``get_task("data.csv", text_column="text", label_column="label")``: one file gives ``train`` (90%) and a
deterministic held-out ``dev`` (10%); a directory with ``train.<ext>`` and ``dev.<ext>`` (or
``validation.<ext>``) gives both splits. String labels are mapped to ids in sorted order; non-integer numeric
labels make a regression task.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import DataError
from kdnas_deploy.tasks.base import Task

FILE_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl")
DEV_FRACTION_PERCENT = 10


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with open(path, encoding="utf-8-sig", newline="") as fh:
                delim = "\t" if suffix == ".tsv" else ","
                quoting = csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL
                return list(csv.DictReader(fh, delimiter=delim, quoting=quoting))
        text = path.read_text(encoding="utf-8-sig")
        if suffix == ".jsonl" or (suffix == ".json" and not text.lstrip().startswith("[")):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot parse {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                        ) from None  # fmt: skip
    except OSError as exc:
        raise DataError(f"cannot read {path}: {os.strerror(exc.errno) if exc.errno else exc}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: a JSON task file must be a list of objects (or JSON lines)")
    return data


def _split_files(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for split, stems in (("train", ("train",)), ("dev", ("dev", "validation", "val"))):
        for stem in stems:
            for ext in FILE_EXTENSIONS:
                if (root / f"{stem}{ext}").is_file() and split not in found:
                    found[split] = root / f"{stem}{ext}"
    return found


def _in_dev(text: str) -> bool:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 100 < DEV_FRACTION_PERCENT


def file_task(
    path: str | Path,
    text_columns: str | tuple[str, ...] | list[str] | None = None,
    label_column: str = "label",
    name: str | None = None,
    **kwargs: Any,
) -> Task:
    path = Path(path)
    if "text_column" in kwargs and text_columns is None:
        text_columns = kwargs.pop("text_column")
    if kwargs:
        raise DataError(f"unknown task option(s) {', '.join(kwargs)}")
    if text_columns is None:
        text_columns = ("text",)
    if isinstance(text_columns, str):
        text_columns = tuple(c.strip() for c in text_columns.split(",") if c.strip())
    fields = tuple(text_columns)
    if not 1 <= len(fields) <= 2:
        raise DataError(f"a task takes one or two text columns, got {list(fields)}")
    if path.is_dir():
        files = _split_files(path)
        if "train" not in files:
            raise DataError(f"{path} has no train.csv/.tsv/.json/.jsonl")
    elif path.is_file():
        if path.suffix.lower() not in FILE_EXTENSIONS:
            raise DataError(f"unsupported task file {path} (use {', '.join(FILE_EXTENSIONS)})")
        files = {"all": path}
    else:
        raise DataError(f"unknown task {str(path)!r}: not a GLUE name, 'builtin', or an existing file")

    rows_by_split: dict[str, list[dict[str, Any]]] = {}
    for split, file in files.items():
        rows = _read_rows(file)
        if not rows:
            raise DataError(f"{file} has no rows")
        missing = [c for c in (*fields, label_column) if c not in rows[0]]
        if missing:
            raise DataError(f"{file} lacks column(s) {', '.join(missing)} (has: {', '.join(rows[0])})")
        rows_by_split[split] = rows
    if "all" in rows_by_split:
        rows = rows_by_split.pop("all")
        key = [" ".join(str(r[f]) for f in fields) for r in rows]
        rows_by_split["train"] = [r for r, k in zip(rows, key, strict=True) if not _in_dev(k)]
        rows_by_split["dev"] = [r for r, k in zip(rows, key, strict=True) if _in_dev(k)]

    raw_labels = [r[label_column] for rs in rows_by_split.values() for r in rs]
    is_regression, mapping = _label_space(raw_labels, path)
    label_names = tuple(mapping) if mapping else None
    num_labels = 1 if is_regression else (len(mapping) if mapping else int(max(map(int, raw_labels))) + 1)

    def to_label(v: Any) -> float | int:
        if is_regression:
            return float(v)
        return mapping[str(v)] if mapping else int(v)

    def load(split: str):
        import datasets

        if split not in rows_by_split:
            raise DataError(f"task {path} has no {split!r} split")
        rows = rows_by_split[split]
        data: dict[str, list] = {f: [str(r[f]) for r in rows] for f in fields}
        data["label"] = [to_label(r[label_column]) for r in rows]
        features = {f: datasets.Value("string") for f in fields}
        features["label"] = datasets.Value("float32" if is_regression else "int64")
        return datasets.Dataset.from_dict(data, features=datasets.Features(features))

    metrics = ("pearson", "spearmanr") if is_regression else ("accuracy",)
    return Task(
        name=name or path.stem,
        num_labels=num_labels,
        is_regression=is_regression,
        main_metric=metrics[0],
        text_fields=fields,
        metric_names=metrics,
        label_names=label_names,
        source=f"file:{path.resolve()}",
        loader=load,
    )


def _label_space(raw: list[Any], path: Path) -> tuple[bool, dict[str, int] | None]:
    if not raw:
        raise DataError(f"{path}: no labels")
    numbers: list[float] = []
    for v in raw:
        try:
            numbers.append(float(v))
        except (TypeError, ValueError):
            names = sorted({str(x) for x in raw})
            return False, {n: i for i, n in enumerate(names)}
    if all(n.is_integer() and n >= 0 for n in numbers) and len(set(numbers)) <= 100:
        return False, None
    return True, None
