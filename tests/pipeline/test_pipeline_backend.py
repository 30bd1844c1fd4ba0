"""``devices[].backend`` in run configs: validated against the backend's precisions, and refused before the run
writes anything when it cannot run here or its given table prices another backend."""

import sys

import pytest

from kdnas_deploy.errors import ConfigError, DeviceError, TableError
from kdnas_deploy.pipeline.config import PipelineConfig
from kdnas_deploy.pipeline.run import Pipeline
from kdnas_deploy.pipeline.tables import device_inputs, table_file_prefix
from kdnas_deploy.runtime import openvino as rov


def _config(tmp_path, **device):
    teacher = tmp_path / "teacher"
    teacher.mkdir(exist_ok=True)
    return PipelineConfig.from_dict({"task": {"name": "builtin"}, "teacher": {"path": str(teacher)},
                                     "devices": [{"name": "cpu", "budget_fraction": 0.5, **device}]})  # fmt: skip


def test_backend_and_precision_validated(tmp_path):
    dev = _config(tmp_path, backend="cpu-openvino", precision="bf16").devices[0]
    assert dev.backend_name == "cpu-openvino" and table_file_prefix(dev) == "cpu-openvino"
    default = _config(tmp_path).devices[0]
    assert default.backend_name == "cpu-ort" and "backend" not in device_inputs(default)
    assert table_file_prefix(default) == "cpu"
    with pytest.raises(ConfigError, match="precision 'bf16' is not one of fp32, int8"):
        _config(tmp_path, precision="bf16")
    with pytest.raises(ConfigError, match="unknown backend 'cpu-tvm'"):
        _config(tmp_path, backend="cpu-tvm")
    with pytest.raises(ConfigError, match="runs on cuda"):
        _config(tmp_path, backend="cuda-ort")


def test_table_of_another_backend_refused_before_anything_is_written(tmp_path, repo_root):
    table = repo_root / "latency_tables" / "cpu-minilm-l6-fp32-b1-s128.json"  # a cpu-ort table
    run_dir = tmp_path / "run"
    pipe = Pipeline(_config(tmp_path, backend="cpu-openvino", table=str(table)), run_dir, echo=lambda m: None)
    if rov.openvino_available():
        with pytest.raises(TableError, match="prices backend cpu-ort, the device is served by cpu-openvino"):
            pipe.run()
    else:
        with pytest.raises(DeviceError, match="not installed"):
            pipe.run()
    assert not run_dir.exists()


def test_backend_that_cannot_run_here_refused(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(rov, "cpu_flags", lambda: frozenset())
    pipe = Pipeline(_config(tmp_path, backend="cpu-openvino", precision="bf16"), run_dir, echo=lambda m: None)
    with pytest.raises(DeviceError, match=r"devices\['cpu'\]: .*bf16 needs a CPU with avx512_bf16 or AMX"):
        pipe.preflight()
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(DeviceError, match="not installed"):
        pipe.run()
    assert not run_dir.exists()
