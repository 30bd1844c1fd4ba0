"""The deployed path on tiny real models through real ONNX Runtime."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import ExportError
from kdnas_deploy.runtime.deploy import DeployConfig, attention_fused, deploy
from kdnas_deploy.student import build_student


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_deploy_fuses_attention_and_matches_pytorch(tmp_path, precision):
    arch = Architecture(2, 64, 4, 128)
    model = build_student(arch, seed=0)
    out = deploy(model, tmp_path / precision, DeployConfig("O2", precision, "cpu"))
    assert attention_fused(out.fused_ops, arch.num_layers), out.fused_ops
    assert (out.folder / "config.json").is_file()
    if precision == "int8":
        assert out.fused_ops["QAttention"] == arch.num_layers
    ids = torch.randint(0, 1000, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding
    tt = torch.zeros_like(ids)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits.numpy()
    sess = ort.InferenceSession(str(out.onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": tt.numpy()})[0]
    tol = 1e-4 if precision == "fp32" else 0.15
    np.testing.assert_allclose(got, ref, atol=tol)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"optimize": "O9"}, "optimization level"),
        ({"precision": "int4"}, "precision"),
        ({"precision": "int8", "device": "cuda"}, "CPU"),
        ({"precision": "fp16"}, "cuda"),
    ],
)
def test_bad_deploy_configs(kwargs, needle):
    with pytest.raises(ExportError, match=needle):
        DeployConfig(**kwargs)


def test_presets_roundtrip():
    for preset in (DeployConfig.cpu_fp32(), DeployConfig.cpu_int8(), DeployConfig.cuda_fp16()):
        assert DeployConfig.from_dict(preset.to_dict()) == preset


def test_int8_scheme_is_recorded_for_int8_only():
    assert "int8_scheme" not in DeployConfig.cpu_fp32().to_dict()  # fp32 dicts unchanged
    assert DeployConfig.cpu_int8().to_dict()["int8_scheme"] == "per_channel_matmul"
    # an int8 dict written before schemes existed was built per-tensor on all ops
    legacy = DeployConfig.from_dict({"optimize": "O2", "precision": "int8", "device": "cpu", "opset": 18})
    assert legacy.int8_scheme == "per_tensor_all_ops" and legacy != DeployConfig.cpu_int8()
    with pytest.raises(ExportError, match="int8 scheme"):
        DeployConfig(precision="int8", int8_scheme="int4ish")
