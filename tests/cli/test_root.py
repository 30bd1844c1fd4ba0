"""The root command: every stage listed, ``--help`` of every command imports no stage module, exit codes."""

import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "transformers", "datasets", "optimum", "ray")


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kdnas_deploy", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_every_stage_and_is_light():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("latency", "teacher", "distill", "evaluate", "search", "export", "bench", "run"):
        assert cmd in r.stdout
    assert "--verbose" in r.stdout and "--quiet" in r.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from kdnas_deploy.cli import cli; "
         "from click.testing import CliRunner; CliRunner().invoke(cli, ['--help']); "
         "print(any(m in sys.modules for m in ('torch', 'onnxruntime', 'transformers')))"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "False", probe.stderr


def test_help_of_every_command_imports_no_heavy_module():
    script = f"""
import sys
from click.testing import CliRunner
from kdnas_deploy.cli import cli
runner = CliRunner()
STAGES = ("kdnas_deploy.latency", "kdnas_deploy.distill", "kdnas_deploy.export", "kdnas_deploy.runtime",
          "kdnas_deploy.search", "kdnas_deploy.pipeline")
def invoke(commands):
    for args in commands:
        r = runner.invoke(cli, [*args, "--help"])
        assert r.exit_code == 0, (args, r.output)
        assert "Usage:" in r.output, args
invoke([["latency", sub] for sub in ("build", "list", "show", "predict", "validate")]
       + [["teacher", "finetune"], ["distill"], ["evaluate"], ["export"], ["bench"]])
print(sorted(m for m in sys.modules if m.startswith(STAGES)))
invoke([["search"], ["run"]])
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    probe = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["[]", "[]"], probe.stdout


def test_unknown_command_exits_2():
    r = run_cli("frobnicate")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_every_visible_option_has_a_help_text():
    import click

    from kdnas_deploy.cli import cli

    ctx = click.Context(cli)
    missing = []

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])
            return
        missing.extend(f"{' '.join(path)} {p.opts[0]}" for p in cmd.params
                       if isinstance(p, click.Option) and not p.hidden and not p.help)  # fmt: skip

    walk(cli, [])
    assert missing == []
