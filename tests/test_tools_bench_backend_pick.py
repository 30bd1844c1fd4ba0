"""tools/bench_backend_pick: each rule's choice is judged against the reference students' fastest backend."""

import pytest

from tools import bench_backend_pick as bench

SMALL = "L=2,H=128,A=4,F=512"
LARGE = "L=4,H=384,A=6,F=1536"


def _per_model(small_ort: float) -> dict[str, dict[str, float]]:
    per_model = {SMALL: {"cpu-ort": small_ort, "cpu-openvino": 0.435}, LARGE: {"cpu-ort": 2.5, "cpu-openvino": 2.0}}
    for model in bench.REFERENCE:
        per_model[model] = {"cpu-ort": 1.25, "cpu-openvino": 1.0}
    return per_model


@pytest.mark.parametrize(("small_ort", "small_agrees"), [(0.390, False), (0.500, True)])
def test_a_rule_is_scored_against_the_reference_students_in_the_same_pass(monkeypatch, small_ort, small_agrees):
    from kdnas_deploy.latency import pick

    monkeypatch.setattr(pick, "time_interleaved", lambda runners, rounds: _per_model(small_ort))
    row = bench.repetition({}, rounds=1)
    assert row["reference_fastest"] == "cpu-openvino"
    assert row["small_probe"]["agrees"] is small_agrees
    assert row["small_probe"]["slowdown_vs_reference_fastest"] == (1.0 if small_agrees else 1.25)
    assert row["pick_archs"]["chosen"] == "cpu-openvino" and row["pick_archs"]["agrees"]
    summary = bench.summarise([row, row])
    assert summary["small_probe"]["agreement"] == (1.0 if small_agrees else 0.0)
    assert summary["pick_archs"] == {"agreement": 1.0, "worst_slowdown": 1.0, "picks": ["cpu-openvino"]}


@pytest.mark.parametrize("args", [["--repeats", "0"], ["--pause-s", "nan"], ["--rounds", "-1"]])
def test_bad_numbers_are_one_line_exit_2_nothing_written(args, tmp_path, capsys):
    out = tmp_path / "pick.json"
    with pytest.raises(SystemExit) as exc:
        bench.main([*args, "--json", str(out)])
    assert exc.value.code == 2 and not out.exists()
    assert capsys.readouterr().err.strip().count("\n") == 0
