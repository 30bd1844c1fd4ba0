"""The validation plot: drawn with the object API (matplotlib's backend left alone), budget optional."""

import json

import pytest

from kdnas_deploy.latency.validate import plot_report

REPORT = "latency_tables/cpu-minilm-l6-fp32-b1-s128.validation.json"


def test_plot_report_leaves_the_backend_alone(repo_root, tmp_path):
    path = repo_root / REPORT
    if not path.is_file():
        pytest.skip(f"{REPORT} not shipped in this checkout")
    import matplotlib

    before = matplotlib.get_backend()
    report = json.loads(path.read_text())
    for budget in (None, 4.0):
        out = plot_report(report, tmp_path / f"v-{budget}.png", budget_ms=budget)
        assert out.is_file() and out.read_bytes()[:4] == b"\x89PNG"
    assert matplotlib.get_backend() == before
    assert not list(tmp_path.glob(".*.tmp.png"))
