"""Sequence grids: interpolation between grid lengths, refusal outside the grid, held-out lengths in validate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from kdnas_deploy.errors import TableError
from kdnas_deploy.latency.seq_check import check_held_out
from kdnas_deploy.latency.table import LatencyTable


def run(*args):
    return subprocess.run([sys.executable, "-m", "kdnas_deploy", "latency", *args], capture_output=True, text=True)


def test_predict_interpolates_linearly_between_grid_lengths(tiny_table_path):
    table = LatencyTable.load(tiny_table_path)  # grid 16, 32
    archs = table.space.members[:3]
    lo, hi = table.predict(archs, 1, 16), table.predict(archs, 1, 32)
    mid = table.predict(archs, 1, 24)
    np.testing.assert_allclose(mid, 0.5 * (lo + hi), rtol=1e-9)
    np.testing.assert_allclose(table.predict(archs, 1, 20), 0.75 * lo + 0.25 * hi, rtol=1e-9)


def test_predict_outside_grid_is_one_line_naming_the_grid(tiny_table_path):
    table = LatencyTable.load(tiny_table_path)
    with pytest.raises(TableError, match=r"\[16, 32\]"):
        table.predict(table.space.members[:1], 1, 48)
    r = run("predict", str(tiny_table_path), "--arch", "L=2,H=32,A=2,F=64", "--seq", "96")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "[16, 32]" in r.stderr
    r = run("predict", str(tiny_table_path), "--arch", "L=2,H=32,A=2,F=64", "--seq", "24", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["seq"] == 24


def test_check_held_out():
    assert check_held_out([32, 64, 128], [96, 48, 48]) == (48, 96)
    assert check_held_out([128], []) == ()
    with pytest.raises(TableError, match=r"grid length .*\[32, 64, 128\]"):
        check_held_out([32, 64, 128], [64])
    with pytest.raises(TableError, match=r"outside .*\[32, 64, 128\]"):
        check_held_out([32, 64, 128], [200])
    with pytest.raises(TableError, match="at least 2"):
        check_held_out([128], [96])


def test_validate_reports_held_out_lengths(tiny_table_path, tmp_path):
    from kdnas_deploy.latency.measure import MeasurePolicy
    from kdnas_deploy.latency.validate import validate_table

    table = LatencyTable.load(tiny_table_path)
    report = tmp_path / "r.json"
    out = validate_table(
        table,
        n=2,
        seed=0,
        report=report,
        seq=16,
        noise_sessions=2,
        progress=False,
        log=lambda m: None,
        seq_held_out=[24],
        policy=MeasurePolicy.quick(),
        wait_s=1.0,
    )
    held = json.loads(report.read_text())["seq_held_out"]
    assert held == json.loads(json.dumps(out["seq_held_out"]))
    assert held["lengths"] == [24] and held["grid"] == [16, 32] and held["n_points"] == 2
    for key in ("mape_pct", "within_10pct", "within_5pct", "spearman"):
        assert key in held and key in held["per_length"]["24"]
    for p in held["points"]:
        assert p["seq"] == 24 and p["measured_ms"] > 0 and p["predicted_ms"] > 0
    assert len(out["points"]) == 2  # the grid-length points are unchanged


def test_validate_cli_refuses_held_out_on_grid(tiny_table_path, tmp_path):
    report = tmp_path / "r.json"
    r = run("validate", str(tiny_table_path), "--n", "1", "--report", str(report), "--seq-held-out", "32")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "[16, 32]" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not report.exists()


@pytest.fixture(scope="module")
def grid3_table(tmp_path_factory):
    """A tiny real table over the grid 32,64,128 (one variant, depths 1 and 2)."""
    from kdnas_deploy.latency.backends import get_backend
    from kdnas_deploy.latency.measure import MeasurePolicy
    from kdnas_deploy.latency.profiler import build_table
    from kdnas_deploy.space import SearchSpace

    space = SearchSpace.from_dict(
        {
            "name": "tiny-grid3",
            "choices": {"num_layers": [1, 2, 3], "hidden_size": [32], "num_heads": [2], "ffn_size": [64]},
        }
    )
    out = tmp_path_factory.mktemp("grid3") / "t.json"
    build_table(
        space,
        get_backend("cpu", "fp32", threads=1),
        [1],
        [32, 64, 128],
        out,
        policy=MeasurePolicy.quick(),
        progress=False,
        log=lambda m: None,
    )
    return out


def test_grid3_predict_96_and_validate_held_out_48_96(grid3_table, tmp_path):
    r = run("predict", str(grid3_table), "--arch", "L=2,H=32,A=2,F=64", "--seq", "96", "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    table = LatencyTable.load(grid3_table)
    arch = table.space.members[1]
    lo, hi = table.predict_one(arch, 1, 64), table.predict_one(arch, 1, 128)
    assert row["seq"] == 96 and row["raw_latency_ms"] == pytest.approx(0.5 * (lo + hi), abs=1e-3)
    bad = run("predict", str(grid3_table), "--arch", "L=2,H=32,A=2,F=64", "--seq", "256")
    assert bad.returncode == 2 and "[32, 64, 128]" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    report = tmp_path / "v.json"
    r = run(
        "validate",
        str(grid3_table),
        "--n",
        "1",
        "--seq",
        "64",
        "--seq-held-out",
        "48,96",
        "--noise-sessions",
        "2",
        "--report",
        str(report),
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    assert "held-out lengths 48,96 (grid [32, 64, 128])" in r.stdout
    held = json.loads(report.read_text())["seq_held_out"]
    assert held["lengths"] == [48, 96] and held["n_points"] == 2 and set(held["per_length"]) == {"48", "96"}
