"""The runtime layer's small parts: providers, session settings, inputs, runners, and its import rule."""

import ast
from pathlib import Path

import numpy as np
import pytest

from kdnas_deploy.errors import DeviceError, ModelError
from kdnas_deploy.runtime.devices import providers_for
from kdnas_deploy.runtime.inputs import feed_for, model_inputs
from kdnas_deploy.runtime.runners import Runner
from kdnas_deploy.runtime.session import SessionSettings
from kdnas_deploy.runtime.timing import TimingPolicy

PACKAGE = Path(__file__).resolve().parents[2] / "kdnas_deploy"


def test_provider_selection():
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cuda", available=both) == both
    assert providers_for("cpu", available=both) == ["CPUExecutionProvider"]
    with pytest.raises(DeviceError, match="onnxruntime-gpu"):
        providers_for("cuda", available=["CPUExecutionProvider"])
    with pytest.raises(DeviceError, match="unknown device"):
        providers_for("tpu", available=both)


def test_session_settings_render_the_same_truth():
    import onnxruntime as ort

    s = SessionSettings(threads=3, log_severity=3)
    assert s.to_dict() == {"intra_op_num_threads": 3, "inter_op_num_threads": 1, "execution_mode": "sequential",
                           "graph_optimization_level": "ORT_ENABLE_ALL"}  # what CPU tables record
    opts = s.to_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level) == (3, 1, 3)
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert SessionSettings(spinning=False).to_dict()["allow_spinning"] is False
    assert "intra_op_num_threads" not in SessionSettings().to_dict()


def test_model_inputs_and_feed():
    x = model_inputs(2, 8, vocab_size=5000)
    assert set(x) == {"input_ids", "attention_mask", "token_type_ids"}
    assert x["input_ids"].shape == (2, 8) and x["input_ids"].dtype == np.int64
    assert x["input_ids"].min() >= 1000 and x["input_ids"].max() < 5000
    assert (x["attention_mask"] == 1).all() and (x["token_type_ids"] == 0).all()
    np.testing.assert_array_equal(model_inputs(2, 8, 5000)["input_ids"], x["input_ids"])  # seeded
    assert list(feed_for(["attention_mask", "input_ids"], x)) == ["attention_mask", "input_ids"]
    with pytest.raises(ModelError, match="pixel_values"):
        feed_for(["pixel_values"], x, "m")


def test_runner_times_and_closes():
    calls = []
    r = Runner(lambda: calls.append(1), min_warmup=3)
    t = r.time(TimingPolicy(warmup=1, reps=4, min_seconds=0.0))
    assert t.reps == 4 and len(calls) == 7
    r.close()
    r.fn()
    assert len(calls) == 7


def _imports(package: str):
    for path in (PACKAGE / package).rglob("*.py"):
        if path.name == "cli.py":  # the command modules belong to the CLI layer
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                yield path, node.module or ""
            elif isinstance(node, ast.Import):
                yield from ((path, a.name) for a in node.names)


@pytest.mark.parametrize("package,forbidden", [
    ("runtime", ("latency", "export", "distill", "search", "pipeline", "cli")),
    ("latency", ("export", "distill", "search", "pipeline", "cli")),
    ("export", ("search", "pipeline", "cli")),
])  # fmt: skip
def test_layers_import_only_downwards(package, forbidden):
    for path, name in _imports(package):
        parts = name.split(".")
        assert not (parts[0] == "kdnas_deploy" and len(parts) > 1 and parts[1] in forbidden), (path, name)
        if package == "export" and parts[:2] == ["kdnas_deploy", "latency"]:
            assert name == "kdnas_deploy.latency.table", (path, name)  # export reads tables, nothing else
