"""The table's exports are the deployed path: the same `runtime.deploy.deploy` that `export` ships through,
with the same DeployConfig, reused when a build resumes."""

import json

import pytest

from kdnas_deploy.arch import Architecture
from kdnas_deploy.export.exporter import ExportOptions
from kdnas_deploy.latency.backends import CpuOrtBackend, CudaOrtBackend, deploy_student
from kdnas_deploy.runtime.deploy import DeployConfig, fused_operator_counts


@pytest.mark.parametrize("backend,options", [
    (CpuOrtBackend("fp32"), ExportOptions()),
    (CpuOrtBackend("int8"), ExportOptions(quantize="int8")),
    (CudaOrtBackend("fp32"), ExportOptions(device="cuda")),
    (CudaOrtBackend("fp16"), ExportOptions(device="cuda", fp16=True)),
], ids=["cpu-fp32", "cpu-int8", "cuda-fp32", "cuda-fp16"])  # fmt: skip
def test_table_deploy_config_is_what_export_ships(backend, options):
    assert backend.deploy_config == options.deploy_config()
    assert backend.path_config()["deploy_config"] == options.deploy_config().to_dict()
    assert backend.fingerprint()["deploy_config"] == options.deploy_config().to_dict()


def test_deploy_student_writes_the_deployed_graph_and_resumes(tmp_path):
    arch = Architecture(2, 64, 4, 128)
    path = deploy_student(arch, tmp_path / "m", DeployConfig.cpu_int8(), seed=3)
    assert fused_operator_counts(path)["QAttention"] == 2
    quant = json.loads((tmp_path / "m" / "ort_config.json").read_text())["quantization"]
    assert quant["per_channel"] is True and quant["operators_to_quantize"] == ["MatMul", "Attention"]
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".deploy-")]
    mtime = path.stat().st_mtime_ns
    assert deploy_student(arch, tmp_path / "m", DeployConfig.cpu_int8(), seed=3) == path  # reused (resume)
    assert path.stat().st_mtime_ns == mtime
