import subprocess
import sys

import pytest


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "kdnas_deploy", "search", *args], capture_output=True, text=True, cwd=cwd
    )


def test_search_help_lists_the_issue_options_and_is_light():
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    for opt in (
        "--teacher",
        "--task",
        "--data-dir",
        "--table",
        "--budget-ms",
        "--budget",
        "--strategy",
        "--episodes",
        "--candidates",
        "--top-k",
        "--proxy-fraction",
        "--seed",
        "--out",
        "--resume",
        "--hard-budget",
        "--headroom",
    ):
        assert opt in r.stdout
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kdnas_deploy.cli import cli; "
            "from click.testing import CliRunner; CliRunner().invoke(cli, ['search', '--help']); "
            "print(any(m in sys.modules for m in ('torch', 'onnxruntime', 'transformers', 'datasets')))",
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "False", probe.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--table", "t.json"], "go together"),
        (["--budget", "t.json"], "TABLE.json:MS"),
        (["--budget", "t.json:fast"], "not a number"),
        ([], "no latency budget"),
        (["--budget", "missing-table.json:3"], "missing-table.json"),
    ],
)
def test_bad_budget_input_exits_2_without_traceback(tmp_path, args, message):
    r = run_cli("--teacher", str(tmp_path), "--task", "sst2", "--out", str(tmp_path / "run"), *args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert message in r.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_strategy_is_a_usage_error(tmp_path):
    r = run_cli("--teacher", str(tmp_path), "--task", "sst2", "--out", str(tmp_path / "r"), "--strategy", "grid")
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "option, value, listed",
    [("--preset", "fast", "quick"), ("--executor", "dask", "ray"), ("--strategy", "grid", "optuna-tpe")],
)
def test_unknown_preset_executor_strategy_list_the_choices(tmp_path, option, value, listed):
    r = run_cli("--teacher", str(tmp_path), "--task", "sst2", "--out", str(tmp_path / "r"), option, value)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert listed in r.stderr
    assert not (tmp_path / "r").exists()


def test_headroom_lowers_every_budget(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from kdnas_deploy.cli.search import search
    from kdnas_deploy.errors import SearchError
    from kdnas_deploy.search import api, budget

    monkeypatch.setattr(api, "load_table", lambda p: type("T", (), {"device": "cpu", "precision": "fp32"})())
    monkeypatch.setattr(budget, "file_sha256", lambda p: "0" * 64)
    seen = {}

    def fake_run_search(config, out, **kw):
        seen["config"] = config
        raise SearchError("stop")

    monkeypatch.setattr(api, "run_search", fake_run_search)
    args = ["--teacher", str(tmp_path), "--task", "sst2", "--out", str(tmp_path / "r"), "--budget", "t.json:4",
            "--headroom", "0.25", "--preset", "quick", "--episodes", "5"]  # fmt: skip
    r = CliRunner().invoke(search, args)
    assert isinstance(r.exception, SearchError), r.output
    cfg = seen["config"]
    assert cfg.budgets[0].budget_ms == 3.0 and "search target" in r.output
    assert cfg.episodes == 5 and cfg.top_k == 2  # the option over the preset over the defaults


def test_a_refusal_after_the_run_folder_opened_leaves_nothing(tmp_path, repo_root):
    """The teacher is found unusable only after the run folder was locked and its config written: the
    refusal takes the folder back (it holds no result), so bad input writes nothing."""
    from tests.export.conftest import save_tiny_classifier

    teacher = save_tiny_classifier(tmp_path / "teacher", arch=(6, 384, 12, 1536))  # the table's teacher
    (teacher / "model.safetensors").write_bytes(b"\x00" * 64)  # corrupt weights: found when the teacher loads
    table = repo_root / "latency_tables" / "cpu-minilm-l6-fp32-b1-s128.json"
    r = run_cli("--teacher", str(teacher), "--task", "builtin", "--table", str(table), "--budget-ms", "5",
                "--episodes", "1", "--candidates", "4", "--out", str(tmp_path / "run"))  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().startswith("Error: ")
    assert not (tmp_path / "run").exists()
