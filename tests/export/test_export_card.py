"""Model cards (README.md) of student and ONNX folders, and ``evaluate`` on an ONNX folder."""

from __future__ import annotations

import shutil

import pytest
import yaml

from kdnas_deploy.export.card import hub_id, render_card
from tests.export.conftest import run_cli

FULL = {
    "format": "onnx", "name": "student", "teacher": "minilm-l6", "task": "sst2", "params": 1234,
    "architecture": {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "ffn_size": 128},
    "metrics": {"accuracy": 0.875}, "main_metric": "accuracy", "baseline": {"accuracy": 0.5},
    "precision": "int8", "parity": {"max_abs_diff": 1e-5, "tolerance": {"atol": 1e-3, "rtol": 1e-3}},
    "latency": {"median_ms": 1.5, "batch": 1, "seq_len": 128, "threads": 2, "kind": "measured"},
    "device": "cpu, x86_64",
}  # fmt: skip


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_with_every_fact():
    card = render_card(FULL)
    meta = front_matter(card)
    assert meta["library_name"] == "onnx" and meta["pipeline_tag"] == "text-classification"
    assert {"kdnas-deploy", "knowledge-distillation", "text-classification", "onnx"} <= set(meta["tags"])
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["datasets"] == ["sst2"]
    for text in ("| L (num layers) | 2 |", "| parameters | 1,234 |", "| accuracy (main) | 0.875 | 0.5 |",
                 "median 1.5 ms", "Device: cpu, x86_64", "ORTModelForSequenceClassification.from_pretrained"):
        assert text in card, text


def test_card_with_no_optional_fact_invents_none():
    card = render_card({"format": "hf"})
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and "onnx" not in meta["tags"]
    assert "base_model" not in meta and "datasets" not in meta
    for absent in ("## Metrics", "## Latency", "## Architecture", "Teacher"):
        assert absent not in card
    assert "AutoModelForSequenceClassification.from_pretrained" in card


def test_base_model_only_for_hub_ids(tmp_path):
    assert hub_id("bert-base-uncased") is None and hub_id(str(tmp_path)) is None
    assert hub_id("org/model") == "org/model"


def test_export_writes_a_card(tiny_onnx):
    card = (tiny_onnx / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "onnx" and "onnx" in meta["tags"]
    assert "| L (num layers) | 2 |" in card and "Measured: median" in card and "max |diff|" in card


def test_evaluate_onnx_folder_matches_the_hf_folder(tiny_hf, tiny_onnx):
    from kdnas_deploy.distill.evaluate import evaluate_model
    from kdnas_deploy.tasks import get_task

    task = get_task("builtin")
    hf = evaluate_model(tiny_hf, task, progress=False, max_seq_len=64)
    ort = evaluate_model(tiny_onnx, task, progress=False, max_seq_len=64)
    assert ort["runtime"] == "onnxruntime" and hf["runtime"] == "pytorch"
    assert ort["num_examples"] == hf["num_examples"]
    assert ort["accuracy"] == pytest.approx(hf["accuracy"], abs=1e-9)


def test_evaluate_corrupt_onnx_is_one_line(tiny_onnx, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_onnx, bad)
    (bad / "model.onnx").write_bytes(b"not a protobuf")
    r = run_cli("evaluate", str(bad), "--task", "builtin", "--no-progress")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "ONNX" in lines[0], r.stderr
