"""Fixtures of the latency tests: one tiny real table (real export, real ONNX Runtime), built once."""

from __future__ import annotations

import logging

import pytest

from kdnas_deploy.space import SearchSpace

TINY_SPACE = {
    "name": "tiny",
    "choices": {"num_layers": [1, 2, 3, 4], "hidden_size": [32, 64], "num_heads": [2], "ffn_size": [64]},
}


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return SearchSpace.from_dict(TINY_SPACE)


@pytest.fixture(scope="session")
def tiny_table_path(tmp_path_factory, tiny_space):
    from kdnas_deploy.latency.backends import get_backend
    from kdnas_deploy.latency.measure import MeasurePolicy
    from kdnas_deploy.latency.profiler import build_table

    logging.getLogger("optimum").setLevel(logging.ERROR)
    out = tmp_path_factory.mktemp("table") / "tiny.json"
    backend = get_backend("cpu", "fp32", threads=1)
    policy = MeasurePolicy.quick()
    build_table(tiny_space, backend, [1], [16, 32], out, policy=policy, progress=False, log=lambda m: None)
    return out
