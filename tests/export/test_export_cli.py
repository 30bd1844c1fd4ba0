"""``kdnas-deploy export`` end to end on a tiny real model, and its bad-input paths (exit 2, no half output)."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_export_folder_loads_and_report_is_complete(tiny_hf, tiny_onnx):
    files = {p.name for p in tiny_onnx.iterdir()}
    assert {"model.onnx", "config.json", "ort_config.json", "export_report.json", "export_config.json",
            "tokenizer.json", "vocab.txt"} <= files
    assert not [p for p in tiny_onnx.parent.iterdir() if p.name.endswith(".partial")]
    report = json.loads((tiny_onnx / "export_report.json").read_text())
    assert report["schema_version"] == 1
    assert report["deploy_config"] == {"optimize": "O2", "precision": "fp32", "device": "cpu", "opset": 18}
    assert report["fused_ops"]["Attention"] == 2 and report["attention_fused"] is True
    assert report["file_sizes_bytes"]["model.onnx"] == (tiny_onnx / "model.onnx").stat().st_size
    assert report["parity"]["ok"] and len(report["parity"]["cases"]) == 3
    assert max(c["padded_fraction"] for c in report["parity"]["cases"]) > 0.3  # padding really exercised
    assert {c["batch"] for c in report["parity"]["cases"]} == {1, 4, 8}
    lat = report["latency_measured"]
    assert lat["batch"] == 1 and lat["seq_len"] == 128 and 0 < lat["p10_ms"] <= lat["median_ms"] <= lat["p90_ms"]

    # optimum's ORTModel loads the folder, and its logits match the PyTorch model on padded text
    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_onnx)
    ort_model = ORTModelForSequenceClassification.from_pretrained(tiny_onnx)
    pt_model = AutoModelForSequenceClassification.from_pretrained(tiny_hf).eval()
    enc = tok(["a short one", "a much longer sentence that needs no padding at all here"], padding=True,
              return_tensors="pt")
    with torch.no_grad():
        ref = pt_model(**enc).logits.numpy()
    np.testing.assert_allclose(ort_model(**enc).logits.numpy(), ref, atol=1e-4)


def test_existing_nonempty_out_needs_force(tiny_hf, tmp_path, cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    r = cli("export", str(tiny_hf), "--out", str(out), "--bench-reps", "0")
    assert r.returncode == 2 and "--force" in r.stderr and "Traceback" not in r.stderr
    assert (out / "keep.txt").read_text() == "user data"
    r = cli("export", str(tiny_hf), "--out", str(out), "--bench-reps", "0", "--force")
    assert r.returncode == 0, r.stderr
    assert (out / "model.onnx").is_file() and not (out / "keep.txt").exists()


@pytest.mark.parametrize(
    "setup,extra,needle",
    [
        ("empty", [], "no config.json"),
        ("backbone", [], "not a sequence classifier"),
        ("unsupported", [], "unsupported architecture"),
        ("tiny", ["--device", "cuda"], "CUDAExecutionProvider"),
        ("tiny", ["--fp16"], "cuda"),
        ("tiny", ["--quantize", "int8"], "task to check"),
        ("tiny", ["--atol", "0", "--rtol", "0"], "differs from PyTorch"),
        ("tiny", ["--min-agreement", "1.5"], "--min-agreement"),
    ],
)
def test_bad_input_exits_2_without_output(setup, extra, needle, tiny_hf, tmp_path, cli, cuda_available):
    if setup == "tiny":
        src = tiny_hf
    else:
        src = tmp_path / setup
        src.mkdir()
        if setup == "backbone":
            (src / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
            (src / "model.safetensors").write_bytes(b"")
        elif setup == "unsupported":
            (src / "config.json").write_text(json.dumps({"model_type": "resnet"}))
            (src / "model.safetensors").write_bytes(b"")
    if "--device" in extra and cuda_available:
        pytest.skip("this machine has CUDA: the no-GPU error path does not apply")
    out = tmp_path / "out"
    r = cli("export", str(src), "--out", str(out), "--bench-reps", "0", *extra)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and needle in last and "Traceback" not in r.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"fp16": True, "quantize": "int8"}, "exclude"),
        ({"quantize": "int4"}, "unknown quantization"),
        ({"atol": -1.0}, "--atol"),
        ({"min_agreement": 1.5}, "--min-agreement"),
        ({"threads": 0}, "threads"),
    ],
)
def test_bad_export_options(kwargs, needle):
    from kdnas_deploy.errors import ExportError
    from kdnas_deploy.export.exporter import ExportOptions

    with pytest.raises(ExportError, match=needle):
        ExportOptions(**kwargs)


def test_options_resolve_to_deploy_config():
    from kdnas_deploy.export.exporter import ExportOptions
    from kdnas_deploy.runtime.deploy import DeployConfig

    assert ExportOptions(quantize="int8").deploy_config() == DeployConfig.cpu_int8()
    assert ExportOptions(device="cuda", fp16=True).deploy_config() == DeployConfig.cuda_fp16()
    assert ExportOptions(quantize="int8", atol=0.2).tolerance().atol == 0.2


def test_int8_export_checks_the_dev_metric(tiny_hf, tmp_path, cli, glue_dir):
    pytest.importorskip("kdnas_deploy.tasks")
    out = tmp_path / "int8"
    r = cli("export", str(tiny_hf), "--out", str(out), "--quantize", "int8", "--task", "sst2",
            "--data-dir", str(glue_dir), "--max-eval-examples", "64", "--bench-reps", "0")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "export_report.json").read_text())
    assert report["deploy_config"]["int8_scheme"] == "per_channel_matmul"
    assert report["fused_ops"]["QAttention"] == 2 and report["fused_ops"]["MatMulInteger"] > 0
    m = report["metric_check"]
    assert m["task"] == "sst2" and m["examples"] == 64 and m["ok"] and m["drop_points"] <= 1.0
    assert "sst2 accuracy" in r.stdout
    a = report["agreement"]  # the default --min-agreement 0.9 on the same 64 dev rows
    assert a["judged"] and a["ok"] and a["min_agreement"] == 0.9 and a["value"] >= 0.9 and a["kind"] == "argmax"
