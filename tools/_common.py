"""Helpers shared by the benchmarks in ``tools/`` (run them as ``python -m tools.<name>`` from the repo root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from kdnas_deploy.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "tools" / "results"
# Default work folders of the benchmarks (git ignores work_artifacts/ at the repository root);
# pass --work to put them elsewhere.
WORK = ROOT / "work_artifacts"
# The GLUE layout beside the checkout (../shared/data/glue), as the tests and the README use it.
GLUE_DIR = ROOT.parent / "shared" / "data" / "glue"


def kdnas_cli(*args: str) -> list[str]:
    """The command line of ``kdnas-deploy ARGS`` with this interpreter (run it with cwd ROOT)."""
    return [sys.executable, "-m", "kdnas_deploy", *args]


def cpu_name() -> str:
    """This machine's CPU as the fingerprint names it (model string and, where known, vendor/family/model)."""
    from kdnas_deploy.latency.fingerprint import cpu_fingerprint

    fp = cpu_fingerprint()
    return " ".join(str(fp[k]) for k in ("cpu_model", "cpu_id") if fp.get(k))


def shown(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it (what the result files record), also when
    it is reached through a link inside the root (``work_artifacts`` linked into a worktree)."""
    for candidate in (Path(os.path.abspath(path)), Path(path).resolve()):
        if candidate.is_relative_to(ROOT):
            return str(candidate.relative_to(ROOT))
    return str(Path(path).resolve())


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


def _weights_sha256(model_dir: Path) -> dict[str, str]:
    from kdnas_deploy.search.budget import file_sha256

    return {f.name: file_sha256(f) for f in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin"))}


def export_and_bench(models: dict[str, str], work: Path, batch: int, seq: int, threads: int,
                     rounds: int = 40) -> dict[str, Any]:
    """Export every model the same way (O2) and benchmark them side by side with ``kdnas-deploy bench``."""
    exported = {}
    for name, path in models.items():
        out = work / "onnx" / name
        source = {"path": str(path), "weights_sha256": _weights_sha256(Path(path))}
        marker = work / "onnx" / f"{name}.source.json"
        same = marker.is_file() and json.loads(marker.read_text()) == source
        if not same or not any(out.glob("*.onnx")):  # a new winner (e.g. more finalists) is exported again
            r = subprocess.run(kdnas_cli("export", path, "--out", str(out), "--optimize", "O2", "--force"), cwd=ROOT)
            if r.returncode != 0:
                return {"error": f"export of {name} failed (exit {r.returncode})"}
            atomic_write_json(marker, source)
        exported[name] = str(out)
    out_json = work / "bench.json"
    bench = ["bench", *exported.values(), "--batch", str(batch), "--seq", str(seq), "--threads", str(threads),
             "--rounds", str(rounds), "--json", str(out_json)]  # fmt: skip
    r = subprocess.run(kdnas_cli(*bench), cwd=ROOT)
    if r.returncode != 0:
        return {"error": f"bench failed (exit {r.returncode})"}
    rows = json.loads(out_json.read_text())
    by_path = {str(Path(row["path"]).resolve()): row for row in rows}
    result = {name: by_path.get(str(Path(p).resolve())) for name, p in exported.items()}
    t, s = result.get("teacher"), result.get("student")
    if t and s:
        result["speedup"] = t["median_ms"] / s["median_ms"]
    return result
