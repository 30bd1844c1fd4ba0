"""The lean fusion path writes exactly what optimum's ORTOptimizer writes, with the weights kept on disk."""

import json

import pytest

from kdnas_deploy.arch import Architecture
from kdnas_deploy.runtime.deploy import ONNX_FILE, DeployConfig, export_onnx, optimize_onnx
from kdnas_deploy.student import build_student


@pytest.fixture(scope="module")
def raw_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("lean") / "raw"
    export_onnx(build_student(Architecture(2, 64, 4, 128), seed=0), out)
    return out


@pytest.mark.parametrize("level", ["O1", "O2", "O3"])
def test_lean_fusion_is_byte_identical_to_ortoptimizer(raw_export, tmp_path, level):
    config = DeployConfig(level, "fp32", "cpu")
    lean = optimize_onnx(raw_export, tmp_path / "lean", config, lean=True)
    reference = optimize_onnx(raw_export, tmp_path / "ref", config, lean=False)
    assert lean.read_bytes() == reference.read_bytes()
    for name in ("config.json", "ort_config.json"):
        assert json.loads((tmp_path / "lean" / name).read_text()) == json.loads((tmp_path / "ref" / name).read_text())
    assert sorted(p.name for p in (tmp_path / "lean").iterdir()) == sorted(p.name for p in (tmp_path / "ref").iterdir())


def test_lean_fusion_leaves_no_work_files_and_refuses_fp16(raw_export, tmp_path):
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    from kdnas_deploy.runtime.lowmem.lean_fusion import fuse_lean

    out = tmp_path / "one"
    out.mkdir()
    fuse_lean(raw_export / ONNX_FILE, out / ONNX_FILE, AutoOptimizationConfig.O2(), "bert", 4, 64)
    assert [p.name for p in out.iterdir()] == [ONNX_FILE]
    with pytest.raises(ValueError, match="fp16"):
        fuse_lean(raw_export / ONNX_FILE, out / "x.onnx", AutoOptimizationConfig.O2(for_gpu=True, fp16=True))
