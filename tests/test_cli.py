import subprocess
import sys


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kdnas_deploy", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_every_stage_and_is_light():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("latency", "teacher", "distill", "evaluate", "search", "export", "bench", "run"):
        assert cmd in r.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from kdnas_deploy.cli import cli; "
         "from click.testing import CliRunner; CliRunner().invoke(cli, ['--help']); "
         "print(any(m in sys.modules for m in ('torch', 'onnxruntime', 'transformers')))"],
        capture_output=True, text=True,
    )
    assert probe.stdout.strip() == "False", probe.stderr


def test_unknown_command_exits_2():
    r = run_cli("frobnicate")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
