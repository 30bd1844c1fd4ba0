"""The OpenVINO runtime helpers: a clean refusal without openvino or without bf16 compute, the explicit
precision hint, and a compiled model that computes what PyTorch computes."""

import sys

import numpy as np
import pytest

from kdnas_deploy.errors import DeviceError
from kdnas_deploy.runtime import openvino as rov


@pytest.fixture
def no_openvino(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError


def test_missing_openvino_is_a_one_line_device_error(no_openvino):
    with pytest.raises(DeviceError, match=r"needs OpenVINO, which is not installed here .*\[openvino\]"):
        rov.require_openvino()
    assert rov.openvino_available() is False and rov.openvino_version() is None


def test_bf16_needs_avx512_bf16_or_amx(monkeypatch):
    assert rov.bf16_flags(frozenset({"avx512_vnni", "avx512f"})) == []
    assert rov.bf16_flags(frozenset({"amx_bf16", "avx512_bf16"})) == ["avx512_bf16", "amx_bf16"]
    monkeypatch.setattr(rov, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    with pytest.raises(DeviceError, match="bf16 needs a CPU with avx512_bf16 or AMX"):
        rov.require_precision("bf16")
    rov.require_precision("fp32")
    monkeypatch.setattr(rov, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    rov.require_precision("bf16")
    rov.require_precision("int8")  # an NNCF IR (compile_model refuses a model without FakeQuantize at int8)
    with pytest.raises(DeviceError, match="not 'fp16'"):
        rov.require_precision("fp16")
    assert rov.OpenVinoSettings(2, "int8").to_config()["INFERENCE_PRECISION_HINT"] == "f32"


def test_settings_ask_for_the_precision_explicitly():
    # OpenVINO picks bf16 by itself on a bf16 CPU: fp32 must be asked for
    assert rov.OpenVinoSettings(2, "fp32").to_config() == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                                                           "INFERENCE_PRECISION_HINT": "f32",
                                                           "INFERENCE_NUM_THREADS": 2}  # fmt: skip
    assert rov.OpenVinoSettings(None, "bf16").to_config()["INFERENCE_PRECISION_HINT"] == "bf16"


def test_ir_of_the_deployed_graph_matches_pytorch(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    import multiprocessing

    # outside CI (no CI=true) OpenVINO's converter forks a telemetry sender per event; the conversion must
    # start no process at all
    monkeypatch.delenv("CI", raising=False)
    started = []
    monkeypatch.setattr(multiprocessing.Process, "start", lambda self: started.append(self))
    import torch

    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.runtime.deploy import DeployConfig, deploy, quiet_loggers
    from kdnas_deploy.runtime.inputs import model_inputs
    from kdnas_deploy.student import build_student

    model = build_student(Architecture(1, 32, 2, 64), seed=0).eval()
    with quiet_loggers():
        deployed = deploy(model, tmp_path, DeployConfig.cpu_fp32())
    ir = rov.convert_to_ir(deployed.onnx_path, tmp_path)
    assert started == []
    assert ir.name == rov.IR_FILE and (tmp_path / rov.IR_WEIGHTS).is_file()
    assert rov.ir_or_onnx(tmp_path) == ir
    session = rov.open_openvino(tmp_path, threads=1)
    x = model_inputs(2, 16)
    got = session.run(None, x)[0]
    with torch.inference_mode():
        ref = model(**{k: torch.as_tensor(v) for k, v in x.items()}).logits.numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)
    runner = rov.ov_runner(session, x)
    runner.fn()
    runner.close()


def test_a_corrupt_onnx_file_names_what_is_wrong_in_one_line(tmp_path):
    pytest.importorskip("openvino")
    from kdnas_deploy.errors import ModelError

    bad = tmp_path / "model.onnx"
    bad.write_text("garbage\n")
    with pytest.raises(ModelError) as info:
        rov.convert_to_ir(bad, tmp_path)
    message = str(info.value)
    assert "\n" not in message and "Unable to read the model" in message and "Exception from" not in message
    assert not (tmp_path / rov.IR_FILE).exists()
    assert rov.ov_reason(RuntimeError("Exception from a.cpp:1:\n\nwhat went wrong\n")) == "what went wrong"
    assert rov.ov_reason(RuntimeError("")) == "RuntimeError"
