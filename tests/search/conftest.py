"""Fixtures of the search tests: one private local Ray instance per test module (skipped without Ray)."""

from __future__ import annotations

import pytest
import search_doubles


@pytest.fixture(scope="module")
def ray_cluster(request):
    """One local instance for the module; tests' evaluator classes are shipped to workers by value."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.cloudpickle.register_pickle_by_value(search_doubles)
    ray.cloudpickle.register_pickle_by_value(request.module)
    # Ray >= 2.x on Linux maps 127.0.0.1 back to the node's address, so no loopback-only option exists;
    # the instance is private to this machine (token authentication is on by default since Ray 2.5x).
    # address="local": always a new private instance, never a cluster that ``ray start`` left on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
