"""The shared typed options: every bad number, repeated arch key or unusable output path is one usage line,
exit code 2, no traceback and nothing written, before any stage module is imported."""

from __future__ import annotations

import math
import subprocess
import sys

import click
import pytest

from kdnas_deploy.cli import options as o
from kdnas_deploy.runtime.devices import default_threads


@pytest.fixture
def cli_main(capsys, tmp_path, monkeypatch):
    """Run ``kdnas_deploy.cli.main`` in-process in an empty ``tmp_path``; returns (exit code, stderr)."""
    from kdnas_deploy.cli import main

    monkeypatch.chdir(tmp_path)

    def run(*args):
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
        return code, capsys.readouterr().err

    return run


MODEL = "model"  # never read: the option check comes first
BAD_NUMBERS = [
    ("evaluate", MODEL, "--task", "builtin", "--batch-size", "0"),
    ("evaluate", MODEL, "--task", "builtin", "--max-seq-len", "-1"),
    ("evaluate", MODEL, "--task", "builtin", "--max-seq-len", "0"),
    ("evaluate", MODEL, "--task", "builtin", "--threads", "0"),
    ("teacher", "finetune", "--task", "builtin", "--out", "t", "--batch-size", "0"),
    ("teacher", "finetune", "--task", "builtin", "--out", "t", "--epochs", "0"),
    ("teacher", "finetune", "--task", "builtin", "--out", "t", "--epochs", "-1"),
    ("teacher", "finetune", "--task", "builtin", "--out", "t", "--max-seq-len", "0"),
    ("teacher", "finetune", "--task", "builtin", "--out", "t", "--lr", "inf"),
    ("distill", "--teacher", "t", "--arch", "L=1,H=32,A=2,F=64", "--task", "builtin", "--out", "s", "--lr", "nan"),
    ("distill", "--teacher", "t", "--arch", "L=1,H=32,A=2,F=64", "--task", "builtin", "--out", "s",
     "--temperature", "0"),
    ("distill", "--teacher", "t", "--arch", "L=1,H=32,A=2,F=64", "--task", "builtin", "--out", "s",
     "--kd-weight", "-1"),
    ("distill", "--teacher", "t", "--arch", "L=1,H=32,A=2,F=64", "--task", "builtin", "--out", "s",
     "--ema-decay", "1"),
    ("distill", "--teacher", "t", "--arch", "L=1,H=32,A=2,F=64", "--task", "builtin", "--out", "s",
     "--augment", "-2"),
    ("distill", "--teacher", "t", "--arch", "L=2,L=3,H=32,A=2,F=64", "--task", "builtin", "--out", "s"),
    ("distill", "--teacher", "t", "--arch", "L=2,num_layers=3,H=32,A=2,F=64", "--task", "builtin", "--out", "s"),
    ("distill", "--teacher", "t", "--arch", '{"num_layers": 2, "num_layers": 3}', "--task", "builtin",
     "--out", "s"),
    ("search", "--teacher", "t", "--task", "sst2", "--out", "r", "--table", "t.json", "--budget-ms", "inf"),
    ("search", "--teacher", "t", "--task", "sst2", "--out", "r", "--table", "t.json", "--budget-ms", "3",
     "--alpha", "nan"),
    ("latency", "build", "--out", "t.json", "--threads", "0"),
    ("latency", "build", "--out", "t.json", "--export-workers", "-1"),
    ("latency", "build", "--out", "t.json", "--rounds", "0"),
    ("latency", "build", "--out", "t.json", "--seq", "32,0"),
    ("latency", "build", "--out", "t.json", "--batch", "1,x"),
    ("latency", "predict", "t.json", "--arch", "L=2,L=3"),
    ("latency", "predict", "t.json", "--arch", "L=2,H=32,A=2,F=64", "--seq", "-4"),
    ("latency", "validate", "t.json", "--report", "r.json", "--n", "0"),
    ("export", MODEL, "--out", "o", "--bench-batch", "0"),
    ("export", MODEL, "--out", "o", "--bench-reps", "-1"),
    ("export", MODEL, "--out", "o", "--max-metric-drop", "nan"),
    ("export", MODEL, "--out", "o", "--atol", "-1e-3"),
    ("bench", MODEL, "--rounds", "0"),
    ("bench", MODEL, "--threads", "-1"),
    ("bench", MODEL, "--seq", "0"),
    # numbers too large to be meant: they overflowed C ints, allocated terabytes or ran for years
    ("evaluate", MODEL, "--task", "builtin", "--threads", "1000000000000"),
    ("bench", MODEL, "--batch", "1000000000000"),
    ("bench", MODEL, "--rounds", "1000000000000"),
    ("bench", MODEL, "--block", "1000000000000"),
    ("export", MODEL, "--out", "o", "--threads", "1000000000000"),
    ("export", MODEL, "--out", "o", "--bench-reps", "1000000000000"),
    ("search", "--teacher", "t", "--task", "sst2", "--out", "r", "--table", "t.json", "--budget-ms", "3",
     "--episodes", "1000000000000"),
    ("search", "--teacher", "t", "--task", "sst2", "--out", "r", "--table", "t.json", "--budget-ms", "3",
     "--final-epochs", "1e300"),
    ("search", "--teacher", "t", "--task", "sst2", "--out", "r", "--table", "t.json", "--budget-ms", "3",
     "--seed", "-1"),
    ("latency", "build", "--out", "t.json", "--seq", "32,1000000000000"),
]  # fmt: skip


def _one_usage_line(code, err):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err


@pytest.mark.parametrize("args", BAD_NUMBERS, ids=lambda a: " ".join(a)[:60])
def test_bad_numbers_are_one_usage_line_and_write_nothing(cli_main, tmp_path, args):
    code, err = cli_main(*args)
    _one_usage_line(code, err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, needle",
    [
        (("bench", MODEL, "--json", "."), "is a directory"),
        (("evaluate", MODEL, "--task", "builtin", "--json", "."), "is a directory"),
        (("latency", "build", "--out", "."), "is a directory"),
        (("export", MODEL, "--out", "file.txt"), "existing file"),
        (("teacher", "finetune", "--task", "builtin", "--out", "file.txt"), "existing file"),
        (("export", MODEL, "--out", "o", "--table", "missing.json"), "not found"),
        (("bench", MODEL, "--table", "missing.json"), "not found"),
        (("export", MODEL, "--out", "file.txt/sub"), "is a file"),
    ],
)
def test_unusable_paths_are_refused_up_front(cli_main, tmp_path, args, needle):
    (tmp_path / "file.txt").write_text("user data")
    code, err = cli_main(*args)
    _one_usage_line(code, err)
    assert needle in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    assert (tmp_path / "file.txt").read_text() == "user data"


def test_latency_build_refuses_a_nonempty_out_without_force(cli_main, tmp_path):
    table = tmp_path / "table.json"
    table.write_text('{"entries": []}')
    code, err = cli_main("latency", "build", "--out", table)
    _one_usage_line(code, err)
    assert "--force" in err and table.read_text() == '{"entries": []}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]


def test_a_bad_number_in_a_subprocess_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kdnas_deploy", "evaluate", "m", "--task", "builtin", "--batch-size",
                        "0"], capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "--batch-size" in r.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- the types
@pytest.mark.parametrize(
    "kind, value, ok",
    [
        (o.Finite, "1e3", 1000.0),
        (o.Finite, "-0.07", -0.07),
        (o.Finite, "nan", None),
        (o.Finite, "-inf", None),
        (o.Finite, "x", None),
        (o.PositiveFloat, "0", None),
        (o.PositiveFloat, "1e-9", 1e-9),
        (o.NonNegativeFloat, "0", 0.0),
        (o.NonNegativeFloat, "-1e-9", None),
        (o.Probability, "1", 1.0),
        (o.Probability, "0", None),
        (o.Probability, "1.01", None),
        (o.UnitInterval, "0", 0.0),
        (o.FiniteFloat(0, 1, max_open=True), "1", None),
        (o.PositiveIntList, "32,64, 128", (32, 64, 128)),
        (o.PositiveIntList, "1,,8", (1, 8)),
        (o.PositiveIntList, "0", None),
        (o.PositiveIntList, ",", None),
        (o.PositiveIntList, "1.5", None),
        (o.PositiveInt, "0", None),
        (o.NonNegativeInt, "0", 0),
    ],
)
def test_number_types(kind, value, ok):
    if ok is None:
        with pytest.raises(click.BadParameter):
            kind.convert(value, None, None)
    else:
        got = kind.convert(value, None, None)
        assert got == ok and not (isinstance(got, float) and math.isnan(got))


def test_arch_type(tmp_path):
    arch = o.ARCH.convert("L=2,H=32,A=2,F=64", None, None)
    assert arch.short() == "L=2,H=32,A=2,F=64"
    path = tmp_path / "a.json"
    path.write_text('{"num_layers": 2, "hidden_size": 32, "num_heads": 2, "ffn_size": 64, "hidden_size": 64}')
    for bad in ("L=2,L=3,H=32,A=2,F=64", "l=2,L=2,H=32,A=2,F=64", str(path), "L=2,H=32", "L=two"):
        with pytest.raises(click.BadParameter):
            o.ARCH.convert(bad, None, None)


def test_hidden_aliases_parse_but_are_not_listed():
    from click.testing import CliRunner

    from kdnas_deploy.cli import cli

    runner = CliRunner()
    export_help = runner.invoke(cli, ["export", "--help"]).output
    assert "--metric-task" in export_help and "--task " not in export_help
    build_help = runner.invoke(cli, ["latency", "build", "--help"]).output
    assert "--no-progress" in build_help and "--quiet" not in build_help
    assert "[default: minilm-l6]" in build_help
    # the old names still parse (the refusal below comes from a later option)
    r = runner.invoke(cli, ["export", "m", "--out", "o", "--task", "sst2", "--bench-batch", "0"])
    assert r.exit_code == 2 and "--bench-batch" in r.output
    r = runner.invoke(cli, ["latency", "build", "--out", "t.json", "--quiet", "--rounds", "0"])
    assert r.exit_code == 2 and "--rounds" in r.output


def test_hidden_alias_fills_the_new_option(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from kdnas_deploy.cli import cli
    from kdnas_deploy.export import exporter

    seen = {}

    def fake_export(model_dir, out_dir, opts, log=None):
        seen["opts"] = opts
        raise click.exceptions.Exit(0)

    monkeypatch.setattr(exporter, "export_model", fake_export)
    r = CliRunner().invoke(cli, ["export", str(tmp_path), "--out", str(tmp_path / "o"), "--task", "sst2"])
    assert r.exit_code == 0, r.output
    assert seen["opts"].task == "sst2" and seen["opts"].threads == default_threads()


def test_one_thread_default_everywhere():
    from click.testing import CliRunner

    from kdnas_deploy.cli import cli

    runner = CliRunner()
    for args in (["latency", "build"], ["export"], ["bench"], ["distill"], ["evaluate"], ["teacher", "finetune"]):
        out = runner.invoke(cli, [*args, "--help"]).output
        assert "physical cores" in " ".join(out.split()), args


def test_verbose_and_quiet_configure_logging_only_here(monkeypatch):
    import logging

    from kdnas_deploy.cli import configure_logging

    ours = logging.getLogger("kdnas_deploy")
    monkeypatch.setattr(ours, "level", ours.level)
    configure_logging(quiet=True)
    assert ours.level == logging.WARNING
    configure_logging(verbose=1)
    assert ours.level == logging.DEBUG
    configure_logging()
    assert ours.level == logging.INFO


def test_verbose_with_quiet_is_a_usage_error(cli_main):
    code, err = cli_main("-v", "-q", "latency", "show", "t.json")
    _one_usage_line(code, err)
