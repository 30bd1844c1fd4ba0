"""``kdnas-deploy bench``: a Hugging Face folder and its ONNX export timed side by side."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdnas_deploy.errors import ExportError, ModelError
from kdnas_deploy.export.bench import BenchConfig, format_rows, onnx_precision, run_bench
from kdnas_deploy.export.folders import inspect_folder

REQUIRED = {"path", "runtime", "median_ms", "p10_ms", "p90_ms", "sequences_per_s"}


def test_bench_cli_json_rows(tiny_hf, tiny_onnx, tmp_path, cli):
    out = tmp_path / "rows.json"
    r = cli("bench", str(tiny_hf), str(tiny_onnx), "--batch", "2", "--seq", "32", "--threads", "1",
            "--rounds", "3", "--block", "2", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    assert isinstance(rows, list) and len(rows) == 2
    assert [row["runtime"] for row in rows] == ["pytorch", "onnxruntime"]
    for row in rows:
        assert REQUIRED <= set(row) and "predicted_ms" not in row
        assert 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["sequences_per_s"] == pytest.approx(2000.0 / row["median_ms"], rel=1e-3)
        assert row["reps"] == 6 and row["batch"] == 2 and row["seq_len"] == 32
    assert rows[0]["speedup_vs_first"] == 1.0
    assert rows[1]["speedup_vs_first"] == pytest.approx(rows[0]["median_ms"] / rows[1]["median_ms"], rel=1e-2)
    assert "(baseline)" in r.stdout and "speedup" in r.stdout


class PerLayerTable:
    """A table with LatencyTable's ``predict`` signature: 1.5 ms per layer plus 0.01 ms per token."""

    def predict(self, arch, batch, seq):
        return np.asarray([1.5 * arch.num_layers + 0.01 * batch * seq])


def test_bench_with_table_adds_predicted_for_onnx_rows(tiny_hf, tiny_onnx):
    rows = run_bench([tiny_hf, tiny_onnx], BenchConfig(batch=1, seq=16, threads=1, rounds=2, block=2),
                     table=PerLayerTable(), progress=False)
    assert rows[0]["predicted_ms"] is None  # PyTorch eager is not what the table prices
    assert rows[1]["predicted_ms"] == pytest.approx(2 * 1.5 + 0.16)
    assert "predicted" in format_rows(rows).splitlines()[0]


def test_precision_detection(tiny_onnx, tmp_path):
    assert onnx_precision(inspect_folder(tiny_onnx)) == "fp32"
    # without the export report, precision is read off the graph
    from kdnas_deploy.runtime.deploy import quantize_int8

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((tiny_onnx / "config.json").read_text())
    quantize_int8(tiny_onnx / "model.onnx", bare / "model.onnx")
    assert onnx_precision(inspect_folder(bare)) == "int8"


def test_bench_bad_inputs(tmp_path, tiny_onnx, cli, cuda_available):
    with pytest.raises(ModelError, match="no config.json"):
        run_bench([tmp_path], BenchConfig())
    with pytest.raises(ExportError, match="seq 600"):
        BenchConfig(seq=600)
    r = cli("bench", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr
    if not cuda_available:
        r = cli("bench", str(tiny_onnx), "--device", "cuda")
        assert r.returncode == 2 and "CUDAExecutionProvider" in r.stderr and "Traceback" not in r.stderr


def test_format_rows_lists_teacher_first():
    rows = [
        {"path": "/m/teacher", "runtime": "pytorch", "precision": "fp32", "median_ms": 20.0, "p10_ms": 19.0,
         "p90_ms": 22.0, "sequences_per_s": 50.0, "speedup_vs_first": 1.0},
        {"path": "/m/student", "runtime": "onnxruntime", "precision": "int8", "median_ms": 4.0, "p10_ms": 3.9,
         "p90_ms": 4.2, "sequences_per_s": 250.0, "speedup_vs_first": 5.0, "predicted_ms": 4.1},
    ]
    text = format_rows(rows).splitlines()
    assert text[0].split()[:2] == ["model", "runtime"] and "predicted" in text[0]
    assert text[2].startswith("teacher (baseline)") and text[3].rstrip().endswith("5.00x")


def test_the_paired_speedup_follows_round_by_round_ratios_through_a_state_change():
    """5 rounds; the machine turns 1.5x slower between the teacher's and the student's block of round 3. The
    teacher's median is then a fast-state reading and the student's a slow one (ratio of medians 2.0); the
    paired speedup is the rounds' median ratio, 3."""
    from kdnas_deploy.export.bench import paired_speedup

    teacher = [9.0, 9.0] * 3 + [13.5, 13.5] * 2
    student = [3.0, 3.0] * 2 + [4.5, 4.5] * 3
    assert np.median(teacher) / np.median(student) == pytest.approx(2.0)
    out = paired_speedup(teacher, student, block=2)
    assert out["speedup_paired"] == pytest.approx(3.0)
    assert out["speedup_paired_p10"] == pytest.approx(2.4) and out["speedup_paired_p90"] == pytest.approx(3.0)
    assert paired_speedup([1.0], [1.0], block=2) == {}


def test_a_row_whose_p90_is_far_above_its_p10_is_flagged_as_a_disturbed_window(caplog):
    """The 2.56-6.68 ms of an ORT student beside a teacher at 9.60-10.59 ms in the same rounds (a real bench, whose
    20-ms pauses left the ORT model timed before the student spinning)."""
    from kdnas_deploy.export.bench import flag_disturbed

    rows = [{"path": "/m/teacher", "p10_ms": 9.6013, "p90_ms": 10.5925},
            {"path": "/m/student", "p10_ms": 2.5644, "p90_ms": 6.6776}]  # fmt: skip
    with caplog.at_level("WARNING"):
        assert flag_disturbed(rows) == ["student"]
    assert [r["disturbed"] for r in rows] == [False, True] and rows[1]["p90_over_p10"] == pytest.approx(2.604)
    assert "window was disturbed" in caplog.text and "/m/student" in caplog.text
