"""tools/bench_seq_score.py: two runs that differ in ``latency.seq`` only, compared on the same dev rows."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from tools._common import ROOT
from tools.bench_seq_score import (
    across_seeds,
    discordant,
    main,
    paired_difference,
    parse_seeds,
    step_name,
    targets,
    variant_config,
    variant_name,
)


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(np.mean(pred == gold))


def test_the_auto_run_differs_from_the_config_in_its_length_and_teacher_only(tmp_path):
    table = tmp_path / "t.json"
    shipped = yaml.safe_load((ROOT / "configs" / "glue" / "sst2.yaml").read_text())
    fixed = variant_config("sst2", tmp_path, table, auto=False, teacher=None)
    auto = variant_config("sst2", tmp_path, table, auto=True, teacher="runs/x/teacher")
    assert fixed["teacher"] == shipped["teacher"] and fixed["latency"] == shipped["latency"]
    assert fixed["search"] == shipped["search"] == auto["search"] and fixed["bench"] == auto["bench"]
    assert auto["latency"] == {**shipped["latency"], "seq": "auto"} and auto["teacher"] == {"path": "runs/x/teacher"}
    assert all(d["table"] == str(table) for cfg in (fixed, auto) for d in cfg["devices"])
    assert fixed["task"] == {**shipped["task"], "data_dir": str(tmp_path)}
    assert (variant_name(fixed), variant_name(auto)) == ("seq128", "seqauto")


def test_identical_predictions_differ_by_nothing():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, 300)
    pred = np.where(rng.random(300) < 0.8, gold, 1 - gold)
    out = paired_difference(accuracy, pred, pred.copy(), gold, n=200)
    assert out["difference_points"] == 0.0 and out["ci95_points"] == [0.0, 0.0]
    assert out["share_of_resamples_b_better"] == 0.0


def test_the_paired_interval_brackets_the_difference_and_excludes_zero_for_a_clear_gain():
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 2, 800)
    a = np.where(rng.random(800) < 0.80, gold, 1 - gold)
    b = a.copy()
    b[np.flatnonzero(a != gold)[:40]] = gold[np.flatnonzero(a != gold)[:40]]  # b fixes 40 of a's errors: +5 points
    out = paired_difference(accuracy, a, b, gold, n=500)
    assert out["difference_points"] == pytest.approx(100 * (accuracy(b, gold) - accuracy(a, gold)))
    assert out["difference_points"] == pytest.approx(5.0)
    low, high = out["ci95_points"]
    assert 0 < low < 5.0 < high and out["share_of_resamples_b_better"] == 1.0
    assert discordant(a, b, gold) == {"only_fixed_right": 0, "only_auto_right": 40}


def test_the_target_is_half_a_point_and_carries_the_interval():
    cmp = {"paired": {"difference_points": 0.49, "ci95_points": [-1.0, 2.0]}}
    assert targets(cmp)["seq_auto_gain_points"] == {"value": 0.49, "target": 0.5, "met": False,
                                                    "ci95_points": [-1.0, 2.0]}  # fmt: skip
    cmp["paired"]["difference_points"] = 0.5
    assert targets(cmp)["seq_auto_gain_points"]["met"] is True


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--steps", "fixed,score"], "unknown step(s) score"),
        (["--task", "nosuchtask"], "no configs/glue/nosuchtask.yaml"),
        (["--data-dir", "{tmp}/missing"], "missing"),
        (["--table", "{tmp}/none.json"], "none.json: no such file"),
        (["--seeds", "0,-1"], "--seeds takes non-negative integers separated by commas, not '-1'"),
        (["--seeds", ","], "--seeds is empty"),
        (["--results", "{tmp}/f/out.json", "--steps", "fixed"], "cannot write --results"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, says):
    results = tmp_path / "out.json"
    argv = ["--results", str(results), "--work", str(tmp_path)] + [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "{tmp}/f/out.json" in args:  # a results path below a file
        (tmp_path / "f").write_text("a file")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert says in capsys.readouterr().err
    assert not results.exists() and {p.name for p in tmp_path.iterdir()} <= {"f"}


def test_the_compared_student_is_the_one_the_runs_summary_names(tmp_path, monkeypatch):
    import json

    import tools.bench_seq_score as mod

    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"student": {"path": str(tmp_path / "run" / "search" / "student")}}))
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    assert mod.student_dir({"run": "run"}) == tmp_path / "run" / "search" / "student"


def test_both_students_are_priced_at_both_lengths_as_a_share_of_the_teacher():
    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.latency.table import LatencyTable
    from tools.bench_seq_score import cross_prices

    path = ROOT / "latency_tables" / "cpu-minilm-l6-fp32-b1-s32-64-128.xeon-f6m167-amx.json"
    archs = {"teacher": "L=6,H=384,A=12,F=1536", "fixed": "L=5,H=256,A=4,F=384", "auto": "L=4,H=256,A=4,F=768"}

    def step(seq, student):
        return {"seq": seq, "summary": {"teacher": {"arch": archs["teacher"]}, "student": {"arch": archs[student]}}}

    out = cross_prices(path, step({"mode": "fixed", "seq": 128}, "fixed"), step({"mode": "auto", "seq": 40}, "auto"))
    assert set(out) == {"seq40", "seq128"}
    table = LatencyTable.load(path)
    for seq in (40, 128):
        ms = table.predict([Architecture.parse(a) for a in archs.values()], 1, seq, calibrated=False)
        assert out[f"seq{seq}"]["teacher"] == pytest.approx(float(ms[0]), abs=1e-4)
        assert out[f"seq{seq}"]["fraction_of_teacher"]["auto"] == pytest.approx(float(ms[2] / ms[0]), abs=1e-4)
    assert out["seq40"]["teacher"] < out["seq128"]["teacher"]


def test_another_seed_changes_the_search_seed_and_the_names_only(tmp_path):
    base = variant_config("sst2", tmp_path, None, auto=True, teacher="t")
    seeded = variant_config("sst2", tmp_path, None, auto=True, teacher="t", seed=3)
    assert seeded["search"] == {**base["search"], "seed": 3}
    assert {k: v for k, v in seeded.items() if k != "search"} == {k: v for k, v in base.items() if k != "search"}
    assert (variant_name(base), variant_name(seeded)) == ("seqauto", "seqauto-seed3")
    assert (step_name("fixed", 0), step_name("compare", 2)) == ("fixed", "compare@seed2")
    assert parse_seeds("0, 1,1,2") == [0, 1, 2]
    with pytest.raises(ValueError, match="not '1.5'"):
        parse_seeds("0,1.5")


def test_over_several_seeds_the_target_is_the_mean_difference():
    def cmp(diff, fixed, auto):
        return {"paired": {"difference_points": diff}, "fixed": {"metric_recomputed": fixed, "student": "a"},
                "auto": {"metric_recomputed": auto, "student": "b"}}  # fmt: skip

    out = across_seeds({1: cmp(1.2, 0.87, 0.882), 0: cmp(0.0, 0.876, 0.876)})
    assert out["seeds"] == [0, 1] and out["difference_points"] == [0.0, 1.2]
    assert out["mean_difference_points"] == 0.6 and out["fixed_metric"] == [0.876, 0.87]
    t = out["targets"]["seq_auto_gain_points"]
    assert t["value"] == 0.6 and t["met"] is True and t["per_seed_points"] == [0.0, 1.2]
    assert across_seeds({0: cmp(0.0, 0.9, 0.9), 1: cmp(0.9, 0.9, 0.909)})["targets"]["seq_auto_gain_points"][
        "met"] is False  # a mean of 0.45
