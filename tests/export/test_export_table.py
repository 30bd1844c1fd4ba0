"""Predicted next to measured: ``export --table`` and ``bench --table`` with the shipped CPU latency table."""

from __future__ import annotations

import json

import pytest

TABLE = "latency_tables/cpu-minilm-l6-fp32-b1-s128.json"
INT8_TABLE = "latency_tables/cpu-minilm-l6-int8-b1-s128.json"
SPACE_ARCH = (2, 128, 4, 384)  # a member of the minilm-l6 space the tables cover


@pytest.fixture(scope="module")
def table_path(repo_root):
    path = repo_root / TABLE
    if not path.is_file():
        pytest.skip(f"{TABLE} not shipped in this checkout")
    return path


@pytest.fixture(scope="module")
def space_onnx(tmp_path_factory, make_classifier, table_path, cli):
    root = tmp_path_factory.mktemp("space")
    hf = make_classifier(root / "hf", arch=SPACE_ARCH)
    out = root / "onnx"
    r = cli("export", str(hf), "--out", str(out), "--bench-reps", "5", "--table", str(table_path))
    assert r.returncode == 0, r.stderr
    assert "table predicts" in r.stdout
    return hf, out


def test_export_report_has_predicted_and_measured(space_onnx, table_path):
    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.latency.table import LatencyTable

    _, out = space_onnx
    report = json.loads((out / "export_report.json").read_text())
    pred = report["latency_predicted"]
    expected = LatencyTable.load(table_path).predict(Architecture(*SPACE_ARCH), batch=1, seq=128)[0]
    assert pred["predicted_ms"] == pytest.approx(float(expected), abs=1e-3)
    assert pred["table_precision"] == "fp32"
    assert pred["measured_over_predicted"] == pytest.approx(
        report["latency_measured"]["median_ms"] / pred["predicted_ms"], rel=1e-3)


def test_bench_table_column(space_onnx, table_path, tmp_path, cli):
    hf, out = space_onnx
    rows_path = tmp_path / "rows.json"
    r = cli("bench", str(hf), str(out), "--rounds", "2", "--block", "2", "--table", str(table_path),
            "--json", str(rows_path))
    assert r.returncode == 0, r.stderr
    rows = json.loads(rows_path.read_text())
    assert rows[0]["predicted_ms"] is None and rows[1]["predicted_ms"] > 0
    assert "predicted ms" in r.stdout


def test_table_refuses_other_precision_and_shapes(repo_root, tiny_hf, space_onnx, tmp_path, cli):
    hf, _ = space_onnx
    int8_table = repo_root / INT8_TABLE
    if int8_table.is_file():
        r = cli("export", str(hf), "--out", str(tmp_path / "a"), "--table", str(int8_table), "--bench-reps", "0")
        assert r.returncode == 2 and "prices int8 graphs" in r.stderr and not (tmp_path / "a").exists()
    # the tiny test shape is outside the table's space: a clear error before any export work
    r = cli("export", str(tiny_hf), "--out", str(tmp_path / "b"), "--table", str(repo_root / TABLE),
            "--bench-reps", "0")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()


def test_table_refuses_other_thread_count(space_onnx, table_path, tmp_path, cli):
    hf, out = space_onnx
    r = cli("bench", str(out), "--threads", "1", "--table", str(table_path), "--rounds", "1", "--block", "1")
    assert r.returncode == 2 and "measured with 2 threads, --threads is 1" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().splitlines()[-1].startswith("Error: ")
    r = cli("export", str(hf), "--out", str(tmp_path / "t"), "--threads", "1", "--table", str(table_path),
            "--bench-reps", "0")
    assert r.returncode == 2 and "measured with 2 threads" in r.stderr and not (tmp_path / "t").exists()


def test_check_threads_passes_tables_without_threads():
    from kdnas_deploy.errors import TableError
    from kdnas_deploy.latency.table import check_threads

    class NoThreads:
        threads = None

    class Two:
        threads, source = 2, "t.json"

    check_threads(NoThreads(), 1)
    check_threads(object(), 1)
    check_threads(Two(), 2)
    with pytest.raises(TableError, match="t.json was measured with 2 threads"):
        check_threads(Two(), 4)
