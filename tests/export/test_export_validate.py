"""Parity and dev-metric checks on tiny real models, real ONNX Runtime and real SST-2 rows."""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np
import pytest

from kdnas_deploy.errors import ExportError, ParityError
from kdnas_deploy.export.folders import load_hf_classifier, load_tokenizer
from kdnas_deploy.export.validate import PARITY_CASES, ParityTolerance, check_metric, check_parity
from kdnas_deploy.runtime.session import make_session


def test_parity_passes_on_own_export(tiny_hf, tiny_onnx):
    model, tok = load_hf_classifier(tiny_hf), load_tokenizer(tiny_hf)
    cases = check_parity(model, tok, make_session(tiny_onnx / "model.onnx"))
    assert len(cases) == len(PARITY_CASES) and all(c.ok for c in cases)
    assert {c.padding for c in cases} == {"longest", "max_length"}
    assert cases[-1].max_length == 128


def test_parity_error_on_a_different_model(tiny_onnx, tmp_path, make_classifier):
    other = make_classifier(tmp_path / "other", seed=1)  # same shape, other weights
    model, tok = load_hf_classifier(other), load_tokenizer(other)
    with pytest.raises(ParityError, match="differs from PyTorch at batch 1"):
        check_parity(model, tok, make_session(tiny_onnx / "model.onnx"))


def test_parity_tolerance_presets_tighten_with_precision():
    fp32, fp16, int8 = (ParityTolerance.for_precision(p) for p in ("fp32", "fp16", "int8"))
    assert fp32.atol < fp16.atol < int8.atol


@dataclass(frozen=True)
class LocalSst2:
    """A minimal task with the ``kdnas_deploy.tasks`` interface, reading the real SST-2 dev TSV."""

    path: str
    rows: int = 96
    name: str = "sst2"
    main_metric: str = "accuracy"
    num_labels: int = 2
    is_regression: bool = False
    text_fields: tuple[str, ...] = ("sentence",)

    def load_split(self, split):
        import datasets

        with open(self.path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[: self.rows]
        return datasets.Dataset.from_dict({"sentence": [r["sentence"] for r in rows],
                                           "label": [int(r["label"]) for r in rows]})

    def compute_metrics(self, preds, labels):
        return {"accuracy": float((np.asarray(preds).argmax(-1) == np.asarray(labels)).mean())}


def _export(src, out):
    from kdnas_deploy.runtime.deploy import DeployConfig, deploy

    return deploy(load_hf_classifier(src), out, DeployConfig.cpu_int8()).onnx_path


def test_metric_check_accepts_int8_of_same_model(glue_dir, tiny_hf, tmp_path):
    task = LocalSst2(str(glue_dir / "SST-2" / "dev.tsv"))
    onnx_path = _export(tiny_hf, tmp_path / "int8")
    res = check_metric(load_hf_classifier(tiny_hf), load_tokenizer(tiny_hf), make_session(onnx_path), task)
    assert res.ok and res.examples == 96 and abs(res.drop_points) <= 1.0
    assert 0.0 <= res.before <= 1.0 and 0.0 <= res.after <= 1.0


def test_metric_check_refuses_a_real_drop_unless_forced(glue_dir, tmp_path, make_classifier):
    # "before" always predicts positive, "after" always negative: on real SST-2 dev rows the accuracy
    # falls from the positive share to the negative share.
    task = LocalSst2(str(glue_dir / "SST-2" / "dev.tsv"), rows=872)
    pos = make_classifier(tmp_path / "pos", bias=(-5.0, 5.0))
    neg = make_classifier(tmp_path / "neg", bias=(5.0, -5.0))
    sess = make_session(_export(neg, tmp_path / "neg-int8"))
    model, tok = load_hf_classifier(pos), load_tokenizer(pos)
    with pytest.raises(ExportError, match=r"loses 1\.83 points of accuracy"):
        check_metric(model, tok, sess, task, max_drop_points=1.0)
    forced = check_metric(model, tok, sess, task, max_drop_points=1.0, force=True)
    assert not forced.ok and forced.forced and forced.before == pytest.approx(444 / 872)


def test_metric_check_through_tasks_module(glue_dir, tiny_hf, tiny_onnx):
    pytest.importorskip("kdnas_deploy.tasks")
    res = check_metric(load_hf_classifier(tiny_hf), load_tokenizer(tiny_hf), make_session(tiny_onnx / "model.onnx"),
                       "sst2", data_dir=glue_dir, max_examples=64)
    assert res.ok and res.examples == 64 and res.drop_points == pytest.approx(0.0, abs=1e-9)
