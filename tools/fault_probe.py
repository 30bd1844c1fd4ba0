"""Fault probe: try the installed CLI as a careful and a hostile user would, and count what breaks.

    python -m tools.fault_probe --out tools/results/fault_probe.json [--quick] [--kills N] [--limit N]

Every case runs ``kdnas-deploy ...`` in a subprocess (one at a time) on tiny inputs the probe makes itself
(the ``builtin`` task, a 2-layer random BERT teacher, a 2-variant space): bad numbers for every numeric option,
bad paths, corrupt files, planted pickles, full and read-only disks (a tiny tmpfs in a user namespace when
``unshare`` allows it, else ``ulimit -f``), and SIGKILLs at random points followed by a resume compared with
an uninterrupted run. Per case: command, exit code, traceback seen, files written/deleted, expectation,
verdict. A case whose option the CLI does not have (``--help``) is ``skipped``. The case tables are in
``tools/fault_probe_cases.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TINY_SPACE = {"name": "probe-tiny", "teacher": {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "ffn_size": 64},
              "choices": {"num_layers": [1, 2], "hidden_size": [32], "num_heads": [2], "ffn_size": [64]}}  # fmt: skip
STUDENT_ARCH = "L=1,H=32,A=2,F=64"
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}  # fmt: skip
TOTAL_KEYS = ("cases", "passed", "skipped", "tracebacks", "accepted_invalid", "refusals_that_wrote",
              "failed_valid", "exit_not_2", "partial_files_left", "records_lost", "records_duplicated",
              "results_differ", "too_slow", "code_executed")  # fmt: skip


def cli_argv() -> list[str]:
    exe = shutil.which("kdnas-deploy")
    return [exe] if exe else [sys.executable, "-m", "kdnas_deploy"]


def snapshot(paths: list[Path]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for root in paths:
        items = [root] if root.is_file() else (root.rglob("*") if root.is_dir() else [])
        for p in items:
            try:
                st = p.lstat()
            except OSError:
                continue
            out[str(p)] = (st.st_size, st.st_mtime_ns) if p.is_file() else (0, 0)
    return out


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


class Probe:
    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root, self.args = root, args
        self.cli = cli_argv()
        self.env = {**os.environ, **ENV}
        self.cases: list[dict[str, Any]] = []
        self._help: dict[str, str] = {}
        self.n = 0
        self.rng = random.Random(args.seed)
        self.sandbox = self._sandbox_kind()

    # ------------------------------------------------------------------ plumbing
    def help_text(self, cmd: tuple[str, ...]) -> str:
        key = " ".join(cmd)
        if key not in self._help:
            r = subprocess.run([*self.cli, *cmd, "--help"], capture_output=True, text=True, env=self.env, timeout=120)
            self._help[key] = r.stdout if r.returncode == 0 else ""
        return self._help[key]

    def missing_options(self, argv: list[str]) -> list[str]:
        cmd = tuple(argv[:2]) if argv[0] in ("latency", "teacher") else tuple(argv[:1])
        text = self.help_text(cmd)
        if not text:
            return [" ".join(cmd)]
        opts = [a.split("=")[0] for a in argv if a.startswith("--")]
        return [o for o in opts if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)]

    def case_dir(self) -> Path:
        self.n += 1
        d = self.root / "cases" / f"{self.n:04d}"
        d.mkdir(parents=True)
        return d

    def limited(self) -> bool:
        return bool(self.args.limit) and len(self.cases) >= self.args.limit

    def run_cli(self, argv: list[str], timeout: float, wrap: str | None = None, fsize: int | None = None,
                watch: Path | None = None) -> tuple[int | None, str, float]:  # fmt: skip
        full = [*self.cli, *argv]
        if wrap is not None and watch is not None:  # a tiny tmpfs (full or read-only) mounted over `watch`
            ro = "mount -o remount,ro \"$D\" && " if wrap == "ro" else ""
            script = (f'D={shlex.quote(str(watch))}; mount -t tmpfs -o size={self.args.tmpfs_kb}k tmpfs "$D" && '
                      f'{ro}"$@"; rc=$?; find "$D" -mindepth 1 > "$D.listing" 2>/dev/null; exit $rc')  # fmt: skip
            full = ["unshare", "-rm", "sh", "-c", script, "sh", *full]

        def limits() -> None:
            os.setsid()
            if fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
                                preexec_fn=limits, cwd=self.root)  # fmt: skip
        try:
            _, err = proc.communicate(timeout=timeout)
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            rc = None
        return rc, err or "", time.perf_counter() - t0

    def case(self, name: str, group: str, argv: list[str], expect: str = "refuse", *, targets: list[Path] = (),
             timeout: float | None = None, wrap: str | None = None, fsize: int | None = None,
             watch: Path | None = None, marker: Path | None = None,
             extra: dict | None = None) -> dict | None:  # fmt: skip
        """Run one case. expect: 'refuse' (exit != 0, one line, nothing written), 'ok' (exit 0), 'fail_clean'
        (a disk fault: exit != 0, one line, no partial files left)."""
        if self.limited():
            return None
        rec: dict[str, Any] = {"name": name, "group": group, "expect": expect,
                               "command": shlex.join(["kdnas-deploy", *argv])}  # fmt: skip
        missing = self.missing_options(argv)
        if missing:
            rec.update(verdict="skipped", missing_options=missing)
            self.cases.append(rec)
            return rec
        targets = [Path(t) for t in targets]
        before = snapshot(targets)
        rc, err, secs = self.run_cli(argv, timeout or self.args.timeout, wrap, fsize, watch)
        after = snapshot(targets)
        changed = sorted(set(before.items()) ^ set(after.items()))
        listing = Path(f"{watch}.listing") if watch is not None else None
        partial_names = [p for p, _ in after.items() if p.endswith((".tmp", ".partial")) or ".partial/" in p]
        if listing is not None and listing.is_file():
            partial_names += [p for p in listing.read_text().split() if p.endswith((".tmp", ".partial"))]
        err_lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        rec.update(exit_code=rc, timed_out=rc is None, seconds=round(secs, 2), traceback="Traceback" in err,
                   wrote=bool(changed), changed=sorted({p for p, _ in changed})[:8], partial_files=partial_names[:8],
                   stderr_tail=err_lines[-2:], code_executed=bool(marker and marker.exists()),
                   **(extra or {}))  # fmt: skip
        rec["verdict"] = self.verdict(rec, expect)
        self.cases.append(rec)
        if self.args.verbose:
            print(f"[{len(self.cases):4d}] {rec['verdict']:<20} rc={rc} {secs:5.1f}s {name}", flush=True)
        return rec

    @staticmethod
    def verdict(rec: dict[str, Any], expect: str) -> str:
        rc = rec["exit_code"]
        if rec["code_executed"]:
            return "code_executed"
        if rec["traceback"]:
            return "traceback"
        if expect == "ok":
            return "ok" if rc == 0 else "failed_valid"
        if rc == 0 or rc is None:
            return "accepted_invalid"
        if expect == "refuse" and rec["wrote"]:
            return "refusal_wrote"
        if rec["partial_files"]:
            return "partial_files_left"
        if rec.get("max_seconds") and rec["seconds"] > rec["max_seconds"]:
            return "too_slow"
        return "ok" if rc == 2 or expect == "fail_clean" else "exit_not_2"

    def _sandbox_kind(self) -> str:
        d = Path(tempfile.mkdtemp(prefix="probe-ns-"))
        try:
            r = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {d} && true"],
                               capture_output=True, timeout=30)  # fmt: skip
            return "tmpfs" if r.returncode == 0 else "ulimit"
        except (OSError, subprocess.SubprocessError):
            return "ulimit"
        finally:
            shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------------ fixtures
    def setup(self) -> dict[str, Path]:
        """Tiny inputs: teacher, space, latency table, distilled student, pipeline config."""
        import yaml

        fx = {k: self.root / "fixtures" / k for k in ("teacher", "space.yaml", "table.json", "student", "run.yaml",
                                                       "cache")}  # fmt: skip
        fx["teacher"].parent.mkdir(parents=True, exist_ok=True)
        save_tiny_teacher(fx["teacher"])
        fx["space.yaml"].write_text(yaml.safe_dump(TINY_SPACE))
        steps = [
            ["latency", "build", "--space", str(fx["space.yaml"]), "--batch", "1", "--seq", "8", "--rounds", "1",
             "--threads", "1", "--out", str(fx["table.json"]), "--no-progress"],
            ["distill", "--teacher", str(fx["teacher"]), "--arch", STUDENT_ARCH, "--task", "builtin", "--preset",
             "proxy", "--max-train-samples", "48", "--out", str(fx["student"]), "--no-progress"],
        ]  # fmt: skip
        for argv in steps:
            rc, err, secs = self.run_cli(argv, 900)
            if rc != 0:
                raise SystemExit(f"fault probe setup failed: kdnas-deploy {shlex.join(argv)}\n{err[-2000:]}")
            print(f"setup: {argv[0]} {argv[1]} {secs:.1f} s", flush=True)
        fx["run.yaml"].write_text(yaml.safe_dump(pipeline_config(fx)))
        return fx


def save_tiny_teacher(folder: Path, layers: int = 2, hidden: int = 32, heads: int = 2, ffn: int = 64,
                      min_vocab: int = 1100) -> Path:  # fmt: skip
    """A random 2-layer BERT sequence classifier with a word-level tokenizer of the builtin task's words (the
    tests' approach, tests/distill/conftest.py), padded with unused tokens to ``min_vocab`` entries (the
    benchmarks feed random token ids below 1000)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from kdnas_deploy.tasks.builtin import generate

    words: set[str] = set()
    for split in ("train", "dev"):
        for text in generate(split, size=400)["sentence"]:
            words.update(text.replace("'", " ' ").split())
    words.update("a the it is was not good bad movie film , .".split())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    vocab += [f"[unused{i}]" for i in range(max(0, min_vocab - len(vocab)))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=ffn, max_position_embeddings=128, num_labels=2)  # fmt: skip
    BertForSequenceClassification(cfg).save_pretrained(folder)
    return folder


def pipeline_config(fx: dict[str, Path]) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "space": str(fx["space.yaml"]),
        "task": {"name": "builtin"},
        "teacher": {"path": str(fx["teacher"])},
        "devices": [{"name": "cpu", "table": str(fx["table.json"]), "budget_fraction": 0.9, "headroom": 0.0}],
        "latency": {"batch": 1, "seq": 8},
        "search": {"episodes": 1, "candidates": 4, "top_k": 1, "proxy_fraction": 0.01, "proxy_epochs": 0.5,
                   "final_epochs": 0.02},
        "export": {"optimize": "O1", "quantize": "none"},
        "bench": {"batch": 1, "seq": 8, "threads": 1},
    }  # fmt: skip


def _result_of(cmd: str, out: Path) -> Any:
    from tools import fault_probe_cases as cases

    if cmd == "distill":
        f = out / "model.safetensors"
        return f.read_bytes() if f.is_file() else None
    if cmd == "latency build":
        f = out / "t.json" if out.is_dir() else out
        doc = json.loads(f.read_text()) if f.is_file() else None
        return sorted(json.dumps({k: e[k] for k in ("num_layers", "hidden_size", "batch", "seq") if k in e})
                      for e in doc["entries"]) if doc else None  # fmt: skip
    if cmd == "search":
        return cases._archs(out) or None
    f = out / "search" / "best_arch.json"
    return f.read_text() if f.is_file() else (out / "summary.json").is_file() or None


def kills(probe: Any, fx: dict[str, Path]) -> None:
    """SIGKILL each killable command at random points, resume it, compare with an uninterrupted run."""
    from tools import fault_probe_cases as cases

    for cmd in probe.args.kill_commands.split(","):
        d = probe.case_dir()
        t0 = time.perf_counter()
        ref = probe.case(f"{cmd} uninterrupted (kill reference)", "kills", cases.base(cmd, fx, d), "ok", timeout=1800)
        if not ref or ref["verdict"] != "ok":
            continue
        span = time.perf_counter() - t0
        out_of = (lambda dd: dd / "t.json") if cmd == "latency build" else (lambda dd: dd / "o")
        want = _result_of(cmd, out_of(d))
        for i in range(probe.args.kills):
            if probe.limited():
                return
            k = probe.case_dir()
            argv = cases.base(cmd, fx, k)
            at = probe.rng.uniform(0.05, 0.75) * span
            proc = subprocess.Popen([*probe.cli, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env=probe.env, start_new_session=True, cwd=probe.root)  # fmt: skip
            try:
                proc.wait(timeout=at)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            name = f"{cmd} SIGKILL #{i + 1} at {at:.1f}s then resume"
            if cmd in ("distill", "latency build") and _result_of(cmd, out_of(k)) is not None:
                rec = {"name": name + " (it had finished)", "group": "kills", "expect": "ok", "verdict": "ok",
                       "command": shlex.join(["kdnas-deploy", *argv]), "exit_code": proc.returncode}  # fmt: skip
                probe.cases.append(rec)
            else:
                resume = cases.with_opt(argv, "--resume", None) if cmd == "search" else argv
                rec = probe.case(name, "kills", resume, "ok", timeout=1800)
            if rec and rec.get("verdict") == "ok":
                got = _result_of(cmd, out_of(k))
                rec["results_differ"] = int(got != want)
                if cmd in ("search", "run") and out_of(k).is_dir():
                    run_dir = out_of(k) if cmd == "search" else out_of(k) / "search"
                    base_dir = out_of(d) if cmd == "search" else out_of(d) / "search"
                    counts = cases.compare_search(base_dir, run_dir)
                    rec.update(records_lost=counts["records_lost"], records_duplicated=counts["records_duplicated"])
                if rec["results_differ"]:
                    rec["verdict"] = "results_differ"


def totals(cases: list[dict[str, Any]]) -> dict[str, int]:
    v = [c.get("verdict") for c in cases]
    t = {k: 0 for k in TOTAL_KEYS}
    t["cases"] = sum(x != "skipped" for x in v)
    t["passed"] = v.count("ok")
    t["skipped"] = v.count("skipped")
    t["tracebacks"] = sum(bool(c.get("traceback")) for c in cases)
    t["accepted_invalid"] = v.count("accepted_invalid")
    t["refusals_that_wrote"] = v.count("refusal_wrote")
    t["failed_valid"] = v.count("failed_valid")
    t["exit_not_2"] = v.count("exit_not_2")
    t["partial_files_left"] = v.count("partial_files_left")
    t["too_slow"] = v.count("too_slow")
    t["code_executed"] = sum(bool(c.get("code_executed")) for c in cases)
    for k in ("records_lost", "records_duplicated", "results_differ"):
        t[k] = sum(int(c.get(k, 0)) for c in cases)
    return t


def main(argv: list[str] | None = None) -> int:
    from tools import fault_probe_cases as cases

    ap = argparse.ArgumentParser(prog="python -m tools.fault_probe", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tools/results/fault_probe.json")
    ap.add_argument("--quick", action="store_true", help="2 kills per command instead of --kills, shorter timeouts")
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs (each then resumed) per killable command")
    ap.add_argument("--kill-commands", default="distill,latency build,search,run", help="Commands to kill")
    ap.add_argument("--limit", type=int, default=0, help="Stop after this many cases (0: all)")
    ap.add_argument("--groups", default="", help="Comma-separated groups to run (default: all)")
    ap.add_argument("--timeout", type=float, default=90.0, help="Seconds before a case counts as accepted")
    ap.add_argument("--tmpfs-kb", type=int, default=48, help="Size of the 'full disk' tmpfs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="Keep the scratch folder")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.kills, args.timeout = min(args.kills, 2), min(args.timeout, 45.0)
    root = Path(tempfile.mkdtemp(prefix="kdnas-fault-probe-"))
    t0 = time.time()
    probe = Probe(root, args)
    try:
        fx = probe.setup()
        wanted = {g for g in args.groups.split(",") if g}
        for group, fn in [*cases.GROUPS, ("kills", kills)]:
            if (not wanted or group in wanted) and not probe.limited():
                fn(probe, fx)
    finally:
        doc = {"schema_version": 1, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "quick": args.quick, "kills_per_command": args.kills, "limit": args.limit, "sandbox": probe.sandbox,
               "seconds": round(time.time() - t0, 1), "totals": totals(probe.cases), "cases": probe.cases}  # fmt: skip
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(doc, indent=1).replace(str(root), "$PROBE")  # scratch folders are not results
        text = text.replace(tempfile.gettempdir() + "/", "$TMP/")
        Path(args.out).write_text(text + "\n")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(doc["totals"]), f"{doc['seconds']} s ->", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
