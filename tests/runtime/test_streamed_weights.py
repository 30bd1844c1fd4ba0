"""The TorchScript export with its weights streamed into the file: the same bytes as the ordinary export."""

import io

import onnx
import pytest
import torch

from kdnas_deploy.arch import Architecture
from kdnas_deploy.runtime.deploy import export_onnx
from kdnas_deploy.runtime.lowmem.streamed_weights import streamed_weights
from kdnas_deploy.student import build_student

ARCH = Architecture(2, 64, 4, 128)


@pytest.fixture(scope="module")
def plain_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "raw"
    return export_onnx(build_student(ARCH, seed=0), out, stream_weights=False)


def test_streamed_export_is_byte_identical(plain_export, tmp_path):
    model = build_student(ARCH, seed=0)
    streamed = export_onnx(model, tmp_path / "raw", stream_weights=True)
    assert streamed.read_bytes() == plain_export.read_bytes()
    assert next(model.parameters()).numel() > 0  # the caller's model is left as it was
    assert not list(tmp_path.rglob("*.partial"))
    graph = onnx.load(str(streamed)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert len(graph.initializer) > 10


def test_consumed_model_gives_the_same_file_and_is_emptied(plain_export, tmp_path):
    model = build_student(ARCH, seed=0)
    path = export_onnx(model, tmp_path / "raw", consume_model=True)
    assert path.read_bytes() == plain_export.read_bytes()
    assert all(p.numel() == 0 for p in model.parameters())


def test_other_exports_pass_through():
    model = torch.nn.Linear(3, 2).eval()
    buffer = io.BytesIO()  # not a path: the exporter's own behaviour
    with streamed_weights(release=True):
        torch.onnx.export(model, (torch.randn(1, 3),), buffer, dynamo=False)
    loaded = onnx.load_from_string(buffer.getvalue())
    assert {t.name for t in loaded.graph.initializer} == {"weight", "bias"}
    assert model.weight.numel() == 6
    assert torch.onnx.export.__module__.startswith("torch.onnx")  # restored on exit


def test_without_the_exporter_internal_nothing_is_patched(monkeypatch):
    monkeypatch.delattr(torch._C, "_jit_pass_onnx_deduplicate_initializers")
    original = torch.onnx.export
    with streamed_weights():
        assert torch.onnx.export is original
