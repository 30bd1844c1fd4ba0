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


def test_budget_of_is_validated(tmp_path):
    dev = _config(tmp_path, precision="int8", budget_of="cpu-ort/fp32").devices[0]
    ref = dev.budget_reference()
    assert (ref.backend, ref.precision, ref.table, ref.budget_of) == ("cpu-ort", "fp32", None, None)
    assert ref.name == "cpu-budget-ref" and ref.threads == dev.threads
    assert _config(tmp_path).devices[0].budget_reference() is None
    for bad, needle in (("cpu-ort", "must be BACKEND/PRECISION"), ("cuda-ort/fp32", "a backend of cpu"),
                        ("cpu-ort/bf16", "cpu-ort prices fp32, int8")):  # fmt: skip
        with pytest.raises(ConfigError, match=needle):
            _config(tmp_path, budget_of=bad)
    with pytest.raises(ConfigError, match="goes with budget_fraction, not budget_ms"):
        _config(tmp_path, budget_of="cpu-ort/fp32", budget_ms=2.0)


def test_budget_of_prices_the_teacher_on_the_named_path(tmp_path, repo_root, monkeypatch):
    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.latency.table import LatencyTable

    fp32 = repo_root / "latency_tables" / "cpu-minilm-l6-fp32-b1-s128.json"
    int8 = repo_root / "latency_tables" / "cpu-minilm-l6-int8-b1-s128.json"
    cfg = _config(tmp_path, precision="int8", budget_fraction=0.25, budget_of="cpu-ort/fp32")
    lines, asked = [], []
    p = Pipeline(cfg, tmp_path / "run", echo=lines.append)
    p.seq = 128
    monkeypatch.setattr(p, "latency_stage", lambda dev: asked.append(dev) or {"table": str(fp32)})
    teacher = Architecture.parse("L=6,H=384,A=12,F=1536")
    [(table, budget)] = p.budgets({"cpu": str(int8)}, teacher)
    on_fp32 = LatencyTable.load(fp32).predict_one(teacher, batch=1, seq=128)
    assert table == str(int8)  # the search and the check still use the device's own table
    assert budget == pytest.approx(0.25 * on_fp32, abs=1e-4)
    assert budget != pytest.approx(0.25 * LatencyTable.load(int8).predict_one(teacher, batch=1, seq=128), rel=0.05)
    assert [(d.backend, d.precision) for d in asked] == [("cpu-ort", "fp32")]
    assert "on cpu-ort/fp32" in lines[-1]
