"""The case tables of ``tools/fault_probe.py``: bad numbers, bad paths, corrupt files, planted pickles, full and
read-only disks, kills. Each group is ``fn(probe, fixtures)``; argv lists name options as the CLI spells them
today, and a case whose option has been renamed is skipped (the probe checks ``--help``)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

HUGE = {"int": "1000000000000", "float": "1e300"}
UNWRITABLE = "/sys/fs/kdnas-probe"  # sysfs: mkdir is refused (EPERM) even for root


def base(cmd: str, fx: dict[str, Path], d: Path) -> list[str]:
    """A valid, fast invocation of ``cmd`` writing under the case folder ``d``."""
    t, s, table, space = str(fx["teacher"]), str(fx["student"]), str(fx["table.json"]), str(fx["space.yaml"])
    return {
        "latency build": ["latency", "build", "--space", space, "--batch", "1", "--seq", "8", "--rounds", "1",
                          "--threads", "1", "--out", str(d / "t.json"), "--workdir", str(d / "workdir"),
                          "--no-progress"],
        "teacher finetune": ["teacher", "finetune", "--model", t, "--task", "builtin", "--out", str(d / "o"),
                             "--max-train-samples", "32", "--epochs", "0.05", "--no-progress"],
        "distill": ["distill", "--teacher", t, "--arch", "L=1,H=32,A=2,F=64", "--task", "builtin", "--out",
                    str(d / "o"), "--preset", "proxy", "--max-train-samples", "32", "--epochs", "0.1", "--no-progress"],
        "evaluate": ["evaluate", s, "--task", "builtin", "--no-progress"],
        "search": ["search", "--teacher", t, "--task", "builtin", "--table", table, "--budget-ms", "1000",
                   "--episodes", "1", "--candidates", "4", "--top-k", "1", "--proxy-fraction", "0.01",
                   "--heldout-size", "16", "--final-top", "0", "--out", str(d / "o"), "--quiet"],
        "export": ["export", s, "--out", str(d / "o"), "--optimize", "O1", "--bench-reps", "0"],
        "bench": ["bench", s, "--seq", "8", "--rounds", "1", "--block", "1", "--threads", "1"],
        "run": ["run", str(fx["run.yaml"]), "--out", str(d / "o"), "--no-progress"],
        "latency show": ["latency", "show", table],
    }[cmd]  # fmt: skip


def with_opt(argv: list[str], opt: str, value: str | None) -> list[str]:
    """``argv`` with ``opt`` set to ``value`` (replaced when present; ``None``: a flag)."""
    out = list(argv)
    if opt in out:
        i = out.index(opt)
        if value is None:
            return out
        out[i + 1] = value
        return out
    return [*out, opt] if value is None else [*out, opt, value]


# (command, option, kind, bad values); "huge" is 1e12 / 1e300
NUMBERS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("latency build", "--threads", "int", ("0", "-1", "huge")),
    ("latency build", "--rounds", "int", ("0", "-1", "huge")),
    ("latency build", "--export-workers", "int", ("-1", "huge")),
    ("latency build", "--batch", "int", ("0", "-1", "nan", "inf", "huge")),
    ("latency build", "--seq", "int", ("0", "-1", "nan", "inf", "huge")),
    ("teacher finetune", "--epochs", "float", ("0", "-1", "nan", "inf", "huge")),
    ("teacher finetune", "--batch-size", "int", ("0", "-1", "huge")),
    ("teacher finetune", "--learning-rate", "float", ("0", "-1", "nan", "inf", "huge")),
    ("teacher finetune", "--max-seq-len", "int", ("0", "-1", "huge")),
    ("teacher finetune", "--max-train-samples", "int", ("0", "-1")),
    ("teacher finetune", "--seed", "int", ("-1",)),
    ("teacher finetune", "--threads", "int", ("0", "-1", "huge")),
    ("distill", "--epochs", "float", ("0", "-1", "nan", "inf", "huge")),
    ("distill", "--max-train-samples", "int", ("0", "-1")),
    ("distill", "--batch-size", "int", ("0", "-1", "huge")),
    ("distill", "--learning-rate", "float", ("0", "-1", "nan", "inf", "huge")),
    ("distill", "--max-seq-len", "int", ("0", "-1", "huge")),
    ("distill", "--temperature", "float", ("0", "-1", "nan", "inf")),
    ("distill", "--kd-weight", "float", ("-1", "nan", "inf")),
    ("distill", "--hard-weight", "float", ("-1", "nan", "inf")),
    ("distill", "--hidden-weight", "float", ("-1", "nan", "inf")),
    ("distill", "--relation-weight", "float", ("-1", "nan", "inf")),
    ("distill", "--seed", "int", ("-1",)),
    ("distill", "--augment", "int", ("-1", "huge")),
    ("distill", "--eval-every", "int", ("-1",)),
    ("distill", "--ema-decay", "float", ("-1", "nan", "inf", "huge")),
    ("distill", "--threads", "int", ("0", "-1", "huge")),
    ("evaluate", "--max-seq-len", "int", ("0", "-1", "huge")),
    ("evaluate", "--batch-size", "int", ("0", "-1", "huge")),
    ("evaluate", "--threads", "int", ("0", "-1", "huge")),
    ("search", "--budget-ms", "float", ("0", "-1", "nan", "inf")),
    ("search", "--episodes", "int", ("0", "-1", "huge")),
    ("search", "--candidates", "int", ("0", "-1", "huge")),
    ("search", "--top-k", "int", ("0", "-1", "huge")),
    ("search", "--proxy-fraction", "float", ("0", "-1", "nan", "inf", "huge")),
    ("search", "--heldout-size", "int", ("0", "-1", "huge")),
    ("search", "--proxy-epochs", "float", ("0", "-1", "nan", "inf", "huge")),
    ("search", "--final-epochs", "float", ("0", "-1", "nan", "inf", "huge")),
    ("search", "--alpha", "float", ("nan", "inf")),
    ("search", "--beta", "float", ("nan", "inf")),
    ("search", "--final-top", "int", ("-1", "huge")),
    ("search", "--batch", "int", ("0", "-1")),
    ("search", "--seq", "int", ("0", "-1")),
    ("search", "--seed", "int", ("-1",)),
    ("search", "--cpus-per-candidate", "float", ("0", "-1", "nan", "inf")),
    ("search", "--gpus-per-candidate", "float", ("-1", "nan", "inf")),
    ("export", "--max-metric-drop", "float", ("-1", "nan", "inf")),
    ("export", "--max-eval-examples", "int", ("0", "-1")),
    ("export", "--atol", "float", ("-1", "nan", "inf")),
    ("export", "--rtol", "float", ("-1", "nan", "inf")),
    ("export", "--threads", "int", ("0", "-1", "huge")),
    ("export", "--bench-batch", "int", ("0", "-1", "huge")),
    ("export", "--bench-seq", "int", ("0", "-1", "huge")),
    ("export", "--bench-reps", "int", ("-1", "huge")),
    ("bench", "--batch", "int", ("0", "-1", "huge")),
    ("bench", "--seq", "int", ("0", "-1", "huge")),
    ("bench", "--threads", "int", ("0", "-1", "huge")),
    ("bench", "--rounds", "int", ("0", "-1", "huge")),
    ("bench", "--block", "int", ("0", "-1", "huge")),
]
# `run` YAML values that must be refused before any stage runs: (dotted key, value)
RUN_CONFIG = [("devices.0.budget_fraction", float("nan")), ("devices.0.budget_fraction", -1.0),
              ("devices.0.budget_fraction", float("inf")), ("search.episodes", 0), ("search.strategy", "genetic"),
              ("devices.0.precision", "fp64"), ("devices.0.device", "tpu"), ("export.optimize", "O9"),
              ("task.name", "no-such-task"), ("teacher.path", "/nonexistent/teacher"), ("search.top_k", -1),
              ("latency.seq", 0), ("bench.threads", 0), ("unknown_key", 1)]  # fmt: skip


def _targets(fx: dict[str, Path], d: Path) -> list[Path]:
    return [d, fx["teacher"], fx["student"], fx["table.json"]]


def numbers(probe: Any, fx: dict[str, Path]) -> None:
    for cmd, opt, kind, values in NUMBERS:
        for v in values:
            d = probe.case_dir()
            value = HUGE[kind] if v == "huge" else v
            probe.case(f"{cmd} {opt} {v}", "numbers", with_opt(base(cmd, fx, d), opt, value), targets=_targets(fx, d))
    import yaml

    for key, value in RUN_CONFIG:
        d = probe.case_dir()
        doc = yaml.safe_load(fx["run.yaml"].read_text())
        node, *path = doc, *key.split(".")
        for k in path[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[path[-1]] = value
        (d / "run.yaml").write_text(yaml.safe_dump(doc))
        probe.case(f"run config {key}={value}", "numbers", ["run", str(d / "run.yaml"), "--out", str(d / "o"),
                   "--no-progress"], targets=_targets(fx, d))  # fmt: skip


OUT_COMMANDS = ("latency build", "teacher finetune", "distill", "search", "export", "run")


def paths(probe: Any, fx: dict[str, Path]) -> None:
    for cmd in OUT_COMMANDS:
        for how in ("file", "under_file", "unwritable"):
            d = probe.case_dir()
            argv = base(cmd, fx, d)
            out = argv[argv.index("--out") + 1]
            if how == "file":
                Path(out).write_text("keep me\n")
            elif how == "under_file":
                (d / "f").write_text("x")
                out = str(d / "f" / "o")
            else:
                out = f"{UNWRITABLE}/o"
            probe.case(f"{cmd} --out {how}", "paths", with_opt(argv, "--out", out), targets=_targets(fx, d))
    for cmd in ("evaluate", "bench"):
        for how in ("dir", "under_file", "unwritable"):
            d = probe.case_dir()
            (d / "f").write_text("x")
            target = {"dir": str(d), "under_file": str(d / "f" / "m.json"), "unwritable": f"{UNWRITABLE}/m.json"}[how]
            probe.case(f"{cmd} --json {how}", "paths", with_opt(base(cmd, fx, d), "--json", target),
                       targets=_targets(fx, d))  # fmt: skip
    missing = [("distill", "--teacher"), ("search", "--teacher"), ("search", "--table"), ("latency build", "--space"),
               ("teacher finetune", "--model"), ("search", "--space"), ("distill", "--init-from"),
               ("export", "--table"), ("bench", "--table"), ("distill", "--data-dir"), ("evaluate", "--data-dir")]
    for cmd, opt in missing:
        d = probe.case_dir()
        probe.case(f"{cmd} {opt} missing", "paths", with_opt(base(cmd, fx, d), opt, str(d / "nope")),
                   targets=_targets(fx, d))  # fmt: skip
    for cmd in ("evaluate", "export", "bench", "latency show", "run"):
        d = probe.case_dir()
        argv = base(cmd, fx, d)
        i = 2 if cmd == "latency show" else 1
        probe.case(f"{cmd} missing input", "paths", [*argv[:i], str(d / "nope"), *argv[i + 1 :]],
                   targets=_targets(fx, d))  # fmt: skip
    for cmd in ("distill", "evaluate", "teacher finetune", "search"):  # offline GLUE without a data dir: fast
        d = probe.case_dir()
        probe.case(f"{cmd} --task sst2 offline", "paths", with_opt(base(cmd, fx, d), "--task", "sst2"),
                   targets=_targets(fx, d), extra={"max_seconds": 20})  # fmt: skip
    d = probe.case_dir()  # a model whose vocabulary is smaller than the benchmark's random token ids
    from tools.fault_probe import save_tiny_teacher

    small = save_tiny_teacher(d / "small-vocab", min_vocab=0)
    probe.case("bench a model with an 82-token vocabulary", "paths", [*base("bench", fx, d)[:1], str(small),
               *base("bench", fx, d)[2:]], "ok")  # fmt: skip
    for bad in ("L=2,L=3,H=32,A=2,F=64", "L=x,H=32,A=2,F=64", "L=1,H=33,A=2,F=64", "{not json", "L=0,H=32,A=2,F=64"):
        d = probe.case_dir()
        probe.case(f"distill --arch {bad}", "paths", with_opt(base("distill", fx, d), "--arch", bad),
                   targets=_targets(fx, d))  # fmt: skip


def _broken_teacher(fx: dict[str, Path], d: Path, how: str) -> Path:
    t = d / "teacher"
    shutil.copytree(fx["teacher"], t)
    if how == "random_safetensors":
        (t / "model.safetensors").write_bytes(os.urandom(4096))
    elif how == "truncated_safetensors":
        data = (t / "model.safetensors").read_bytes()
        (t / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "no_tokenizer":
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (t / name).unlink(missing_ok=True)
    elif how == "non_utf8_config":
        (t / "config.json").write_bytes(b"\xff\xfe\x00{")
    elif how == "truncated_config":
        (t / "config.json").write_text((t / "config.json").read_text()[:40])
    return t


def corrupt(probe: Any, fx: dict[str, Path]) -> None:
    table = fx["table.json"].read_bytes()
    for how, data in (("truncated", table[: len(table) // 2]), ("random", os.urandom(2048)),
                      ("non_utf8", b"\xff\xfe" + table[2:]), ("empty", b"")):  # fmt: skip
        for cmd, opt in (("latency show", None), ("search", "--table"), ("bench", "--table"), ("export", "--table")):
            d = probe.case_dir()
            (d / "t.json").write_bytes(data)
            argv = base(cmd, fx, d)
            argv = ["latency", "show", str(d / "t.json")] if opt is None else with_opt(argv, opt, str(d / "t.json"))
            probe.case(f"{cmd} {how} table", "corrupt", argv, targets=_targets(fx, d))
    for how in ("random_safetensors", "truncated_safetensors", "no_tokenizer", "non_utf8_config", "truncated_config"):
        for cmd in ("distill", "evaluate", "search", "export", "bench"):
            d = probe.case_dir()
            t = str(_broken_teacher(fx, d, how))
            argv = base(cmd, fx, d)
            argv = with_opt(argv, "--teacher", t) if cmd in ("distill", "search") else [argv[0], t, *argv[2:]]
            # bench feeds random token ids: a model folder without a tokenizer is valid input there
            expect = "ok" if (cmd, how) == ("bench", "no_tokenizer") else "refuse"
            probe.case(f"{cmd} teacher {how}", "corrupt", argv, expect, targets=[d / "o", fx["teacher"]])
    bad_yaml = b"name: \xff\xfe bad\nchoices: {num_layers: [1]}\n"
    for cmd, opt in (("run", None), ("latency build", "--space"), ("search", "--space")):
        d = probe.case_dir()
        (d / "bad.yaml").write_bytes(bad_yaml)
        argv = base(cmd, fx, d)
        argv = [argv[0], str(d / "bad.yaml"), *argv[2:]] if opt is None else with_opt(argv, opt, str(d / "bad.yaml"))
        probe.case(f"{cmd} non-UTF-8 YAML", "corrupt", argv, targets=_targets(fx, d))
    for name, data in (("bad.csv", b"sentence,label\n\xff\xfe x,1\n"), ("empty.csv", b"sentence,label\n"),
                       ("labels.csv", b"sentence,label\ngood,7\nbad,x\n")):  # fmt: skip
        d = probe.case_dir()
        (d / name).write_bytes(data)
        probe.case(f"distill --task {name}", "corrupt", with_opt(base("distill", fx, d), "--task", str(d / name)),
                   targets=_targets(fx, d))  # fmt: skip


def _reference_search(probe: Any, fx: dict[str, Path]) -> Path | None:
    if "search_ref" not in fx:
        d = probe.case_dir()
        rec = probe.case("search reference run", "corrupt", base("search", fx, d), "ok", targets=[d], timeout=900)
        fx["search_ref"] = d / "o" if rec and rec["verdict"] == "ok" else Path("/nonexistent")
    return fx["search_ref"] if fx["search_ref"].is_dir() else None


def _archs(run: Path) -> list[str]:
    f = run / "candidates.jsonl"
    rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []
    return [json.dumps(r.get("arch", r.get("architecture")), sort_keys=True) for r in rows]


def compare_search(ref: Path, got: Path) -> dict[str, int]:
    want, have = _archs(ref), _archs(got)
    return {"records_lost": len(set(want) - set(have)), "records_duplicated": len(have) - len(set(have)),
            "results_differ": int(have != want)}  # fmt: skip


def search_logs(probe: Any, fx: dict[str, Path]) -> None:
    ref = _reference_search(probe, fx)
    if ref is None:
        return
    for how in ("torn_tail", "garbage_middle", "cut_half_and_corrupt_cache"):
        d = probe.case_dir()
        run = d / "o"
        shutil.copytree(ref, run)
        log = run / "candidates.jsonl"
        lines = log.read_bytes().splitlines(keepends=True)
        if how == "torn_tail":
            log.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
        elif how == "garbage_middle":
            log.write_bytes(b"".join(lines[:1]) + b"#garbage{\n" + b"".join(lines[1:]))
        else:
            log.write_bytes(b"".join(lines[: len(lines) // 2]))
            for npy in run.rglob("*.npy"):
                npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
        argv = with_opt(base("search", fx, d), "--resume", None)
        expect = "refuse" if how == "garbage_middle" else "ok"
        rec = probe.case(f"search --resume {how}", "corrupt", argv, expect, targets=[run] if expect == "refuse" else [])
        if rec and expect == "ok" and rec.get("exit_code") == 0:
            rec.update(compare_search(ref, run), npy_files=len(list(run.rglob("*.npy"))))


def _evil(marker: Path) -> Any:
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return Evil()


def pickles(probe: Any, fx: dict[str, Path]) -> None:
    import numpy as np
    import torch

    for cmd in ("distill", "teacher finetune"):
        d = probe.case_dir()
        work = d / ".o.work"
        work.mkdir()
        marker = d / "PWNED"
        torch.save({"signature": None, "state": _evil(marker)}, work / "checkpoint.pt")
        (work / "checkpoint.json").write_text('{"signature": null}')
        probe.case(f"{cmd} planted checkpoint pickle", "pickles", base(cmd, fx, d), "ok", marker=marker, targets=[])
    for cmd in ("distill", "evaluate", "export", "bench"):
        d = probe.case_dir()
        t = d / "teacher"
        shutil.copytree(fx["teacher"], t)
        (t / "model.safetensors").unlink()
        marker = d / "PWNED"
        (t / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _evil(marker)}))
        argv = base(cmd, fx, d)
        argv = with_opt(argv, "--teacher", str(t)) if cmd == "distill" else [argv[0], str(t), *argv[2:]]
        probe.case(f"{cmd} pickled pytorch_model.bin", "pickles", argv, "refuse", marker=marker, targets=[d / "o"])
    ref = _reference_search(probe, fx)
    if ref is not None:
        d = probe.case_dir()
        run = d / "o"
        shutil.copytree(ref, run)
        marker = d / "PWNED"
        for npy in run.rglob("*.npy"):
            np.save(npy, np.array([_evil(marker)], dtype=object), allow_pickle=True)
        log = run / "candidates.jsonl"
        log.write_bytes(b"")
        probe.case("search --resume with pickled cache arrays", "pickles", with_opt(base("search", fx, d), "--resume",
                   None), "ok", marker=marker)  # fmt: skip
    d = probe.case_dir()
    marker = d / "PWNED"
    (d / "evil.yaml").write_text(f"space: !!python/object/apply:os.system ['touch {marker}']\n")
    probe.case("run YAML python tag", "pickles", ["run", str(d / "evil.yaml"), "--out", str(d / "o")], marker=marker,
               targets=[d / "o"])  # fmt: skip


def disks(probe: Any, fx: dict[str, Path]) -> None:
    cmds = ("distill", "teacher finetune", "search", "export", "latency build", "run")
    for cmd in cmds:
        for how in (("full", "ro") if probe.sandbox == "tmpfs" else ()) + ("fsize",):
            d = probe.case_dir()
            mnt = d / "mnt"
            mnt.mkdir()
            argv = with_opt(base(cmd, fx, d), "--out", str(mnt / "o"))
            if "--workdir" in argv:
                argv = with_opt(argv, "--workdir", str(mnt / "workdir"))
            if how == "fsize":
                probe.case(f"{cmd} file size limit (EFBIG)", "disks", argv, "fail_clean", targets=[mnt], fsize=32768)
            else:
                probe.case(f"{cmd} {how} disk", "disks", argv, "fail_clean" if how == "full" else "refuse",
                           wrap=how, watch=mnt)  # fmt: skip
    for cmd in ("evaluate", "bench"):
        for how in ("ro", "fsize") if probe.sandbox == "tmpfs" else ("fsize",):
            d = probe.case_dir()
            mnt = d / "mnt"
            mnt.mkdir()
            argv = with_opt(base(cmd, fx, d), "--json", str(mnt / "m.json"))
            kw = {"fsize": 64} if how == "fsize" else {"wrap": how, "watch": mnt}
            probe.case(f"{cmd} --json {how}", "disks", argv, "fail_clean", targets=[mnt], **kw)


GROUPS = [("numbers", numbers), ("paths", paths), ("corrupt", corrupt), ("logs", search_logs), ("pickles", pickles),
          ("disks", disks)]  # fmt: skip
