"""tools/bench_seq.py's ``feasible`` step on a shipped 3-length table (no measuring): the students under the
configs' budget at a length are exactly those the table prices at or below a third of the teacher (less the
headroom) at that length."""

from __future__ import annotations

import pytest

from kdnas_deploy.arch import Architecture
from kdnas_deploy.latency.table import LatencyTable
from tools._common import ROOT
from tools.bench_seq import BUDGET_FRACTION, HEADROOM, feasible_at

TABLE = ROOT / "latency_tables" / "cpu-minilm-l6-fp32-b1-s32-64-128.xeon-m207-avx512-vnni.json"
TEACHER = Architecture.parse("L=6,H=384,A=12,F=1536")


def test_feasible_set_is_the_budget_cut_at_each_length():
    table = LatencyTable.load(TABLE)
    members = list(table.space.members)
    for seq in (128, 40):
        got = feasible_at(table, TEACHER, seq)
        teacher = float(table.predict([TEACHER], 1, seq, calibrated=False)[0])
        assert got["budget_ms"] == round(BUDGET_FRACTION * (1 - HEADROOM) * teacher, 4)
        pred = dict(zip((a.short() for a in members), table.predict(members, 1, seq, calibrated=False), strict=True))
        assert set(got["feasible"]) == {k for k, ms in pred.items() if ms <= got["budget_ms"] + 1e-6}
        assert 0 < got["n_feasible"] < got["n_space"] == len(members)
        assert set(got["largest_feasible"]) <= set(got["feasible"])
    assert feasible_at(table, TEACHER, 40)["teacher_ms"] < feasible_at(table, TEACHER, 128)["teacher_ms"]


def test_another_cpus_run_writes_its_own_results_and_work_folder(tmp_path, capsys):
    """--results keeps one CPU's figures from overwriting another's: the file and the work folder follow it; a
    path in a missing folder is one line, exit 2."""
    from tools._common import WORK
    from tools.bench_seq import Bench, main

    b = Bench(False, None, 2, tmp_path / "seq_bench.other-cpu.json")
    assert b.out == tmp_path / "seq_bench.other-cpu.json" and b.png == tmp_path / "seq_bench.other-cpu.png"
    assert b.work == WORK / "seq_bench.other-cpu" and b.table_path((128,)).parent == b.work
    with pytest.raises(SystemExit) as exc:
        main(["--results", str(tmp_path / "missing" / "x.json"), "--steps", "feasible"])
    assert exc.value.code == 2 and "existing folder" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()
