"""The table's exports are the deployed path: the graph equals `deploy_path.deploy`'s, node for node."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kdnas_deploy.arch import Architecture
from kdnas_deploy.export.deploy_path import DeployConfig, deploy, fused_operator_counts
from kdnas_deploy.latency.backends import export_deployed, make_inputs
from kdnas_deploy.student import build_student


def _graph(path):
    g = onnx.load(str(path)).graph
    nodes = [(n.op_type, tuple(n.input), tuple(n.output), n.domain) for n in g.node]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    return nodes, inits


@pytest.mark.parametrize("config", [DeployConfig.cpu_fp32(), DeployConfig.cpu_int8()], ids=["fp32", "int8"])
def test_export_deployed_equals_deploy(tmp_path, config):
    arch = Architecture(2, 64, 4, 128)
    ref = deploy(build_student(arch, seed=3), tmp_path / "ref", config)
    ours = export_deployed(arch, tmp_path / "ours", config, seed=3)
    (n_ref, i_ref), (n_ours, i_ours) = _graph(ref.onnx_path), _graph(ours)
    assert n_ours == n_ref
    assert i_ours.keys() == i_ref.keys()
    for k in i_ref:
        np.testing.assert_array_equal(i_ours[k], i_ref[k])
    assert fused_operator_counts(ours) == ref.fused_ops
    assert fused_operator_counts(ours)["Attention" if config.precision == "fp32" else "QAttention"] == 2
    feed = make_inputs(2, 16)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0]
            for p in (ref.onnx_path, ours)]  # fmt: skip
    np.testing.assert_array_equal(outs[0], outs[1])
    assert export_deployed(arch, tmp_path / "ours", config, seed=3) == ours  # reused (resume)
