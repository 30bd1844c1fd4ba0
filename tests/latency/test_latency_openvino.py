"""The ``cpu-openvino`` backend: registered, a clean refusal where it cannot run, a table built through it,
and tables of another backend told apart."""

import json
import sys

import pytest

from kdnas_deploy.cli import main
from kdnas_deploy.errors import DeviceError, ModelError
from kdnas_deploy.latency.backends import BACKENDS, CpuOpenVinoBackend, get_backend
from kdnas_deploy.runtime import openvino as rov


def _refused(capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_registered_for_the_cpu_with_fp32_bf16_and_int8():
    assert BACKENDS["cpu-openvino"] is CpuOpenVinoBackend
    assert CpuOpenVinoBackend.device == "cpu" and CpuOpenVinoBackend.precisions == ("fp32", "bf16", "int8")
    # one fp32 graph for every precision: the one cpu-ort fp32 ships (int8 is NNCF's quantisation of its IR)
    for precision in ("bf16", "int8"):
        assert CpuOpenVinoBackend(precision).deploy_config == BACKENDS["cpu-ort"]("fp32").deploy_config


def test_int8_without_nncf_refuses_and_writes_nothing(monkeypatch, capsys, tmp_path):
    pytest.importorskip("openvino")
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(DeviceError, match="openvino int8 needs nncf"):
        get_backend("cpu", "int8", backend="cpu-openvino")
    out = tmp_path / "sub" / "t.json"
    _refused(capsys, ["latency", "build", "--backend", "cpu-openvino", "--precision", "int8", "--out", str(out)],
             "openvino int8 needs nncf")
    assert not out.parent.exists()


def test_int8_prepare_quantises_the_ir_and_records_how(tmp_path):
    pytest.importorskip("nncf")
    import openvino as ov

    from kdnas_deploy.arch import Architecture

    backend = get_backend("cpu", "int8", threads=1, backend="cpu-openvino")
    xml = backend.prepare(Architecture(1, 32, 2, 64), tmp_path)
    assert xml == tmp_path / "int8" / "openvino_model.xml" and (tmp_path / "openvino_model.xml").is_file()
    assert rov.is_int8_model(ov.Core().read_model(str(xml)))
    assert backend.prepare(Architecture(1, 32, 2, 64), tmp_path) == xml  # reused: an interrupted build resumes
    runner = backend.open(xml, 1, 16)
    runner.fn()  # one forward pass of the int8 model
    runner.close()
    q = backend.fingerprint()["quantization"]
    assert q["tool"] == "nncf" and q["calibration_examples"] == 8 and q["nncf_version"]
    with pytest.raises(ModelError, match="not an OpenVINO int8 model"):  # an fp32 IR is never timed as int8
        backend.open(tmp_path / "openvino_model.xml", 1, 16)


def test_without_openvino_the_backend_refuses(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(DeviceError, match="not installed"):
        get_backend("cpu", "fp32", backend="cpu-openvino")
    out = tmp_path / "t.json"
    _refused(capsys, ["latency", "build", "--backend", "cpu-openvino", "--out", str(out), "--no-progress"],
             "not installed")
    assert not out.exists()


def test_bf16_without_cpu_support_writes_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(rov, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    out = tmp_path / "sub" / "t.json"
    _refused(capsys, ["latency", "build", "--backend", "cpu-openvino", "--precision", "bf16", "--out", str(out)],
             "bf16 needs a CPU with avx512_bf16 or AMX")
    _refused(capsys, ["latency", "build", "--precision", "bf16", "--out", str(out)],
             "backend cpu-ort supports precision fp32, int8, not 'bf16'")
    assert not out.exists() and not out.parent.exists()


@pytest.mark.slow  # ~1 min on a loaded 2-core machine: the two probes are exported and timed too
def test_table_through_openvino(tmp_path, tiny_table_path):
    pytest.importorskip("openvino")
    from kdnas_deploy.latency.measure import MeasurePolicy
    from kdnas_deploy.latency.profiler import build_table
    from kdnas_deploy.latency.table import LatencyTable
    from kdnas_deploy.pipeline.tables import TableRequirement, table_mismatches
    from kdnas_deploy.space import SearchSpace

    tiny_space = SearchSpace.from_dict({"name": "tiny", "choices": {"num_layers": [1, 2], "hidden_size": [32],
                                                                    "num_heads": [2], "ffn_size": [64]}})

    backend = get_backend("cpu", "fp32", threads=1, backend="cpu-openvino")
    out = tmp_path / "ov.json"
    table = build_table(tiny_space, backend, [1], [16], out, policy=MeasurePolicy.quick(), progress=False,
                        log=lambda m: None)  # fmt: skip
    doc = json.loads(out.read_text())
    assert doc["backend"] == "cpu-openvino" and doc["fingerprint"]["runtime"] == "openvino"
    fp = doc["fingerprint"]
    assert fp["openvino_version"] and fp["openvino_config"]["INFERENCE_NUM_THREADS"] == 1
    assert table.backend == "cpu-openvino" and table.check_machine() == []  # no "not an ORT provider" mismatch
    assert LatencyTable.load(out).predict_one(next(iter(tiny_space))) > 0
    need = TableRequirement(tiny_space, "cpu", "fp32", 1, 1, 16, "O2", backend="cpu-openvino")
    assert table_mismatches(table, need) == []
    ort_table = LatencyTable.load(tiny_table_path)
    need_ort = TableRequirement(ort_table.space, "cpu", "fp32", 1, 1, 16, "O2", backend="cpu-openvino")
    assert "backend cpu-ort != cpu-openvino" in table_mismatches(ort_table, need_ort)
