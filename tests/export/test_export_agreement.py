"""int8 exports judged by prediction agreement with PyTorch (tiny real models, real ONNX Runtime, real SST-2)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from test_export_validate import LocalSst2, _export

from kdnas_deploy.errors import ParityError
from kdnas_deploy.export.agreement import judge_agreement, parity_agreement, prediction_agreement
from kdnas_deploy.export.folders import load_hf_classifier, load_tokenizer
from kdnas_deploy.export.validate import ParityTolerance, check_metric, check_parity
from kdnas_deploy.runtime.session import make_session


def test_argmax_and_sign_agreement():
    ref = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    got = np.array([[0.1, 0.9], [0.0, 2.0], [0.2, 2.5], [1.2, 0.1]])  # row 2 flips
    doc = prediction_agreement(ref, got, False, "x")
    assert doc["kind"] == "argmax" and doc["value"] == pytest.approx(0.75) and doc["examples"] == 4
    r = np.array([[0.5], [1.0], [4.0], [4.5]])
    g = np.array([[0.4], [3.0], [4.1], [4.4]])  # row 1 crosses the mean (2.5)
    doc = prediction_agreement(r, g, True, "x")
    assert doc["kind"] == "sign" and doc["value"] == pytest.approx(0.75) and 0.8 < doc["correlation"] < 1.0
    with pytest.raises(ParityError, match="shapes"):
        prediction_agreement(ref, got[:2], False, "x")


def test_only_int8_is_judged_and_low_agreement_is_refused():
    low = {"source": "sst2 dev", "examples": 100, "kind": "argmax", "value": 0.6}
    with pytest.raises(ParityError, match=r"agrees with PyTorch on 60\.0% of 100 sst2 dev inputs"):
        judge_agreement(low, "int8", 0.9)
    reported = judge_agreement(low, "fp32", 0.9)
    assert reported["judged"] is False and reported["ok"] is False
    assert judge_agreement({**low, "value": 0.95}, "int8", 0.9)["ok"]
    assert judge_agreement(None, "int8") is None


def test_int8_logits_beyond_the_tolerance_only_warn(tiny_hf, tmp_path, caplog):
    model, tok = load_hf_classifier(tiny_hf), load_tokenizer(tiny_hf)
    sess = make_session(_export(tiny_hf, tmp_path / "int8"))
    zero = ParityTolerance(0.0, 0.0)
    with caplog.at_level(logging.WARNING, logger="kdnas_deploy"):
        cases = check_parity(model, tok, sess, "int8", zero)
    assert cases and not all(c.ok for c in cases) and "judged by prediction agreement" in caplog.text
    assert parity_agreement(cases)["examples"] == sum(c.batch for c in cases)
    with pytest.raises(ParityError, match="differs from PyTorch"):
        check_parity(model, tok, sess, "int8", zero, strict=True)


def test_an_int8_graph_that_predicts_otherwise_is_refused(glue_dir, tmp_path, make_classifier):
    # PyTorch says "positive" for every row, the int8 graph "negative": agreement 0 on real SST-2 dev rows
    task = LocalSst2(str(glue_dir / "SST-2" / "dev.tsv"), rows=200)
    pos = make_classifier(tmp_path / "pos", bias=(-5.0, 5.0))
    neg = make_classifier(tmp_path / "neg", bias=(5.0, -5.0))
    check = check_metric(load_hf_classifier(pos), load_tokenizer(pos), make_session(_export(neg, tmp_path / "n8")),
                         task, max_drop_points=100.0)  # fmt: skip
    assert check.agreement["value"] == 0.0 and check.agreement["examples"] == 200
    assert check.baseline == pytest.approx(max(check.before, check.after))  # each is a constant predictor
    with pytest.raises(ParityError, match="0.0% of 200"):
        judge_agreement(check.agreement, "int8", 0.9)


def test_int8_export_with_zero_tolerance_is_judged_by_agreement(tiny_hf, tmp_path, cli, glue_dir):
    out = tmp_path / "int8"
    r = cli("export", str(tiny_hf), "--out", str(out), "--quantize", "int8", "--metric-task", "sst2",
            "--data-dir", str(glue_dir), "--max-eval-examples", "64", "--bench-reps", "0",
            "--atol", "0", "--rtol", "0", "--min-agreement", "0.5")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "judged by prediction agreement" in r.stderr
    report = json.loads((out / "export_report.json").read_text())
    assert report["parity"]["ok"] is False
    a = report["agreement"]
    assert a["judged"] and a["ok"] and a["source"] == "sst2 dev" and a["examples"] == 64 and a["value"] >= 0.5
    assert report["metric_check"]["baseline"] is not None
    assert "prediction agreement with PyTorch" in r.stdout
    card = (out / "README.md").read_text()
    assert "Prediction agreement with PyTorch" in card and "trivial baseline" in card
