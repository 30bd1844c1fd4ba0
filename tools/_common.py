"""Helpers shared by the benchmarks in ``tools/`` (run them as ``python -m tools.<name>`` from the repo root)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "tools" / "results"
# Default work folders of the benchmarks (git ignores /work_artifacts/); pass --work to put them elsewhere.
WORK = ROOT / "work_artifacts"
# The GLUE layout beside the checkout (../shared/data/glue), as the tests and the README use it.
GLUE_DIR = ROOT.parent / "shared" / "data" / "glue"


def shown(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it (what the result files record)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_tracked(cmd: list[str], log: IO[str] | None = None, interval_s: float = 0.05) -> tuple[int, float, float]:
    """Run ``cmd`` (cwd: the repository root) and sample the RSS of its whole process tree every ``interval_s``.

    Returns ``(exit code, peak RSS in GB, wall seconds)``. Output goes to ``log`` when given (stdout and
    stderr together), else to this process's own."""
    import psutil

    peak = 0
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT if log else None)
    ps = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    return code, peak / 2**30, time.perf_counter() - t0

