"""tools/bench_final_variants.py: its arguments, its summary, and bad input (exit 2, nothing written)."""

from __future__ import annotations

import argparse
import json

import pytest

from tools.bench_final_variants import main, parse_seeds, parse_variant, summarise


def test_variants_and_seeds_parse_and_bad_ones_name_the_problem():
    assert parse_variant('aug4={"augment_copies": 4}') == ("aug4", {"augment_copies": 4})
    assert parse_seeds("1, 2") == [1, 2]
    for bad in ("noequals", "=({})", "x={not json", "x=[1]"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_variant(bad)
    for bad in ("", "a", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seeds(bad)


def _run(variant: str, seed: int, mcc: float, retained: float) -> dict:
    return {"variant": variant, "seed": seed, "dev_metrics": {"mcc": mcc}, "retained": {"mcc": retained}}


def test_summary_gives_means_and_differences_paired_by_seed():
    runs = [_run("base", 1, 0.2, 0.5), _run("base", 2, 0.3, 0.75), _run("aug", 2, 0.35, 0.875),
            _run("aug", 1, 0.1, 0.25)]  # fmt: skip
    got = summarise(runs, ["base", "aug"])
    assert got["base"] == {"seeds": [1, 2], "dev_mcc_mean": 0.25, "retained_mcc_mean": 0.625}
    assert got["aug"]["dev_mcc_minus_base_paired"] == [0.05, -0.1]
    assert got["aug"]["dev_mcc_mean"] == 0.225


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    results = tmp_path / "r.json"
    for argv in (["--run", str(tmp_path / "absent"), "--variant", "b={}"],
                 ["--run", str(tmp_path), "--variant", 'b={"augmnt": 1}'],
                 ["--run", str(tmp_path), "--variant", 'b={"final_epochs": -1}'],
                 ["--run", str(tmp_path), "--variant", 'b={"final_min_steps": "many"}'],
                 ["--run", str(tmp_path), "--variant", "b={}", "--seeds", "0,x"]):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            main([*argv, "--results", str(results)])
        assert e.value.code == 2
        assert "Traceback" not in capsys.readouterr().err
    assert not results.exists() and list(tmp_path.iterdir()) == []


def test_a_corrupt_results_file_exits_2_and_is_left_alone(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("search: {task: cola}\n")
    arch = {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "ffn_size": 64}
    (run / "summary.json").write_text(json.dumps({"final": {"winner": {"arch": arch}}}))
    results = tmp_path / "r.json"
    results.write_text("{broken")
    with pytest.raises(SystemExit) as e:
        main(["--run", str(run), "--variant", "b={}", "--results", str(results)])
    assert e.value.code == 2 and "unreadable" in capsys.readouterr().err
    assert results.read_text() == "{broken"
