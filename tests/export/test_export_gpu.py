"""The CUDA path: the fp16 graph it ships is checked here on the CPU; running it on a GPU is marked ``gpu``."""

from __future__ import annotations

import json

import onnx
import pytest

from kdnas_deploy.export.bench import onnx_precision
from kdnas_deploy.export.folders import inspect_folder, load_hf_classifier, load_tokenizer
from kdnas_deploy.export.validate import check_parity
from kdnas_deploy.runtime.deploy import DeployConfig, attention_fused, deploy
from kdnas_deploy.runtime.session import make_session


def test_cuda_fp16_graph_is_fused_fp16_with_fp32_io(tiny_hf, tmp_path):
    # building the CUDA graph needs no GPU: only running it on the CUDA provider does
    model = load_hf_classifier(tiny_hf)
    out = deploy(model, tmp_path / "fp16", DeployConfig.cuda_fp16(), load_tokenizer(tiny_hf))
    assert attention_fused(out.fused_ops, 2)
    graph = onnx.load(str(out.onnx_path)).graph
    assert {o.type.tensor_type.elem_type for o in graph.output} == {onnx.TensorProto.FLOAT}
    weights = [t for t in graph.initializer if len(t.dims) == 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert onnx_precision(inspect_folder(out.folder)) == "fp16"
    # numerics of the fp16 graph, on the CPU provider, within the fp16 tolerance
    cases = check_parity(model, load_tokenizer(tiny_hf), make_session(out.onnx_path, "cpu"), "fp16")
    assert all(c.ok for c in cases) and max(c.max_abs_diff for c in cases) > 0


@pytest.mark.gpu
def test_export_and_bench_on_cuda_fp16(tiny_hf, tmp_path, cli, require_cuda):
    out = tmp_path / "fp16"
    r = cli("export", str(tiny_hf), "--out", str(out), "--device", "cuda", "--fp16", "--bench-reps", "10")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "export_report.json").read_text())
    assert report["precision"] == "fp16" and report["parity"]["ok"] and report["attention_fused"]
    assert report["latency_measured"]["device"] == "cuda"
    rows_path = tmp_path / "rows.json"
    r = cli("bench", str(tiny_hf), str(out), "--device", "cuda", "--rounds", "3", "--json", str(rows_path))
    assert r.returncode == 0, r.stderr
    rows = json.loads(rows_path.read_text())
    assert [row["precision"] for row in rows] == ["fp32", "fp16"] and all(row["device"] == "cuda" for row in rows)
