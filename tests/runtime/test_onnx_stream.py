"""Streaming conversion between single-file ONNX and external data: same bytes as onnx's own save."""

import onnx
import pytest

from kdnas_deploy.arch import Architecture
from kdnas_deploy.runtime.deploy import ONNX_FILE, export_onnx
from kdnas_deploy.runtime.lowmem.onnx_stream import to_external_data, to_single_file
from kdnas_deploy.student import build_student


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "raw"
    return export_onnx(build_student(Architecture(2, 64, 4, 128), seed=0), out)


def test_round_trip_is_byte_identical_to_onnx_save(exported, tmp_path):
    ext = to_external_data(exported, tmp_path / "ext.onnx", "ext.onnx.data", size_threshold=1024)
    model = onnx.load(str(ext), load_external_data=False)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    small = [t.name for t in model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    assert external and ext.stat().st_size < exported.stat().st_size // 10  # the weights left the graph file
    assert all(len(t.raw_data) < 1024 for t in model.graph.initializer if t.name in small)
    back = to_single_file(ext, tmp_path / ONNX_FILE)
    assert back.read_bytes() == exported.read_bytes()
    loaded = onnx.load(str(ext))  # what onnx itself reads from the external form
    onnx.save_model(loaded, str(tmp_path / "onnx_saved.onnx"))
    assert (tmp_path / "onnx_saved.onnx").stat().st_size >= exported.stat().st_size
    onnx.checker.check_model(str(back))
    assert not list(tmp_path.glob("*.partial"))


def test_garbage_is_refused(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x3f\xff\xff")
    with pytest.raises(ValueError):
        to_external_data(bad, tmp_path / "x.onnx", "x.data")
