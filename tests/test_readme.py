"""Every ```bash and ```python block of the README runs as written (from the repository root).

A block is classified by an HTML comment on the line(s) just before its fence:

- none: short (``--help``, ``latency show/predict`` on the shipped tables, imports); runs in CI;
- ``<!-- readme-test: slow -->``: builds, trainings, searches; runs only with ``KDNAS_README_SLOW=1``, in README
  order (later blocks read what earlier ones wrote under ``runs/``);
- ``<!-- readme-test: skip (REASON) -->``: cannot run here as written (installs, a GPU, a cluster); never run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
SLOW = os.environ.get("KDNAS_README_SLOW") == "1"
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*readme-test:\s*(slow|skip)\b\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    kind: str  # "fast", "slow" or "skip"
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.lang}-L{self.line}-{self.kind}"


def readme_blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        mark = MARKER.match(prev.strip())
        kind, reason = (mark.group(1), mark.group(2)) if mark else ("fast", "")
        blocks.append(Block(lang, "\n".join(lines[start + 1 : j]) + "\n", start + 1, kind, reason))
        i = j + 1
    return blocks


BLOCKS = [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b.lang in ("bash", "python")]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # this interpreter's scripts (kdnas-deploy, lint-imports) first; the checkout's package importable
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_block(block: Block, timeout: float) -> subprocess.CompletedProcess[str]:
    if block.lang == "bash":
        cmd = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        cmd = [sys.executable, "-c", block.code]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


def _params(kind: str) -> list:
    marks = {"slow": [pytest.mark.slow], "fast": []}[kind]
    return [pytest.param(b, id=b.id, marks=marks) for b in BLOCKS if b.kind == kind]


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in BLOCKS if b.kind == "skip"])
def test_skipped_block_says_why(block: Block):
    pytest.skip(f"README line {block.line}: {block.reason}")


@pytest.mark.parametrize("block", _params("fast"))
def test_short_block_runs_as_written(block: Block):
    proc = run_block(block, timeout=300)
    assert proc.returncode == 0, f"README line {block.line}:\n{block.code}\n--- stdout\n{proc.stdout[-3000:]}\n--- " \
                                 f"stderr\n{proc.stderr[-3000:]}"  # fmt: skip


@pytest.mark.skipif(not SLOW, reason="long README block: set KDNAS_README_SLOW=1 to run it")
@pytest.mark.parametrize("block", _params("slow"))
def test_long_block_runs_as_written(block: Block):
    proc = run_block(block, timeout=4 * 3600)
    assert proc.returncode == 0, f"README line {block.line}:\n{block.code}\n--- stderr\n{proc.stderr[-5000:]}"


# Names the other branches of this change add (cli: `latency list`, `export --metric-task`; config: `search
# --headroom`): until they are merged, a missing one is an expected failure, not an error. Empty this set then.
PENDING = {"latency list", "--metric-task", "--headroom"}
GROUPS = {"latency", "teacher"}


def _cli_calls(block: Block) -> list[list[str]]:
    """The ``kdnas-deploy`` command lines of a bash block, as tokens (continuations joined, comments dropped)."""
    calls = []
    for line in block.code.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            tokens = shlex.split(part, comments=True)
            if tokens and tokens[0] == "kdnas-deploy":
                calls.append(tokens[1:])
    return calls


def _long_cli_calls() -> list:
    return [pytest.param(c, id=f"L{b.line}-{'-'.join(c[:2])}") for b in BLOCKS if b.kind != "fast" and b.lang == "bash"
            for c in _cli_calls(b)]  # fmt: skip


@pytest.mark.parametrize("call", _long_cli_calls())
def test_long_block_commands_and_options_exist(call: list[str]):
    """What CI cannot run it can still check: each command of a long block exists with every option it names."""
    path = call[:2] if call and call[0] in GROUPS else call[:1]
    proc = subprocess.run([sys.executable, "-m", "kdnas_deploy", *path, "--help"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    missing = [] if proc.returncode == 0 else [" ".join(path)]
    missing += [t.split("=")[0] for t in call if t.startswith("--") and t.split("=")[0] not in proc.stdout]
    if missing and set(missing) <= PENDING:
        pytest.xfail(f"not merged yet: {missing}")
    assert not missing, f"kdnas-deploy {' '.join(path)}: unknown {missing}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in BLOCKS if b.lang == "python"])
def test_python_block_compiles(block: Block):
    compile(block.code, f"README.md:{block.line}", "exec")


def test_every_block_is_classified_and_skips_say_why():
    assert BLOCKS, "no bash/python blocks found in the README"
    assert sum(b.kind == "fast" for b in BLOCKS) >= 4, "the README should keep short examples that CI runs"
    for b in BLOCKS:
        assert b.kind != "skip" or b.reason.strip("() "), f"README line {b.line}: a skipped block must say why"


def _ci_command() -> str:
    """The command line right below ``.ci/run``'s "keep the two in sync" comment."""
    lines = CI_RUN.read_text(encoding="utf-8").splitlines()
    marker = next(i for i, ln in enumerate(lines) if "keep the two in sync" in ln)
    return lines[marker + 1].strip()


def test_readme_test_command_is_the_one_ci_runs():
    text = README.read_text(encoding="utf-8")
    intro = text.index("this is what `.ci/run` calls")
    block = next(b for b in BLOCKS if b.line > text[:intro].count("\n") + 1)
    assert block.code.strip() == _ci_command()
    assert "lint-imports" in shlex.split(block.code), "CI must check the import layers"


MACHINE_PATHS = ("/work/", "/home/", "/tmp/")


def test_docs_tools_and_configs_name_no_machine_paths():
    files = [README, ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "tools").rglob("*.py"),
             *(ROOT / "tools" / "results").glob("*.json"), *(ROOT / "configs").rglob("*.yaml")]  # fmt: skip
    for path in files:
        if path.name == "test_readme.py" or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in MACHINE_PATHS:
            assert pattern not in text, f"machine path {pattern!r} in {path.relative_to(ROOT)}"
