"""Does ``backend: auto`` pick the backend that is fastest for the students a search ships? (issue 18, item 3)

For each precision with two or more usable backends on this machine, every backend serves three groups of
models: the small probe alone (the pick's rule before), the pick's two models (:data:`PICK_ARCHS`, the rule
now) and the reference students (what the searches of this project shipped). In each repetition
all of them are timed in one interleaved pass (``latency.pick.time_interleaved``, the pick's own timer, with the
bench's idle gap between models), so
each rule's choice (``latency.pick.choose``) is compared with the reference students' fastest backend *in the
same machine state*. Repetitions are spread over a few minutes to meet the machine's fast and slow states.
Also records the wall time of a real ``pick_backend`` call under each rule. A timing bench: quiet machine.

    python -m tools.bench_backend_pick                   # ~4 min on 2 cores
    python -m tools.bench_backend_pick --repeats 4 --precisions int8 --json work_artifacts/pick.json   # a quick look
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.io import atomic_write_json
from tools._common import RESULTS, cpu_name

# The students the searches of this project shipped (tools/results/glue_table.json, fastest_path.json).
REFERENCE = ("L=2,H=384,A=12,F=384", "L=2,H=384,A=4,F=768", "L=2,H=384,A=12,F=768", "L=4,H=256,A=4,F=384",
             "L=4,H=256,A=4,F=768", "L=4,H=192,A=4,F=1152")  # fmt: skip


def rules() -> dict[str, tuple[str, ...]]:
    from kdnas_deploy.latency.pick import PICK_ARCHS, PROBE_ARCH

    return {"small_probe": (PROBE_ARCH.short(),), "pick_archs": tuple(a.short() for a in PICK_ARCHS)}


def repetition(runners: dict[tuple[str, str], Any], rounds: int) -> dict[str, Any]:
    """One interleaved pass over every model (the pick's timer); each rule's choice beside the reference
    students' fastest."""
    from kdnas_deploy.latency.pick import choose, time_interleaved

    per_model = time_interleaved(runners, rounds)
    truth, truth_scores = choose({m: per_model[m] for m in REFERENCE})
    row: dict[str, Any] = {"time": time.strftime("%H:%M:%S"), "per_model_ms": per_model, "reference_fastest": truth,
                           "reference_scores_ms": truth_scores}  # fmt: skip
    for rule, models in rules().items():
        chosen, scores = choose({m: per_model[m] for m in models})
        row[rule] = {"chosen": chosen, "scores_ms": scores, "agrees": chosen == truth,
                     "slowdown_vs_reference_fastest": round(truth_scores[chosen] / truth_scores[truth], 4)}  # fmt: skip
    return row


def pick_cost(precision: str) -> dict[str, float]:
    """Wall seconds of a real ``pick_backend`` (prepare + timing) under each rule."""
    from kdnas_deploy.latency.pick import PICK_ARCHS, PROBE_ARCH, pick_backend

    out = {}
    for rule, archs in (("small_probe", (PROBE_ARCH,)), ("pick_archs", PICK_ARCHS)):
        t0 = time.perf_counter()
        pick_backend("cpu", precision, 2, archs=archs)
        out[rule] = round(time.perf_counter() - t0, 2)
    return out


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for rule in rules():
        slow = [r[rule]["slowdown_vs_reference_fastest"] for r in rows]
        out[rule] = {"agreement": round(sum(r[rule]["agrees"] for r in rows) / len(rows), 3),
                     "worst_slowdown": max(slow), "picks": sorted({r[rule]["chosen"] for r in rows})}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precisions", default="int8,fp32,bf16", help="comma-separated (those with >= 2 backends)")
    ap.add_argument("--repeats", type=int, default=12, help="interleaved passes (default 12)")
    ap.add_argument("--pause-s", type=float, default=10.0, help="seconds between passes (default 10)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds per pass, as the pick (default 6)")
    ap.add_argument("--json", type=Path, default=RESULTS / "backend_pick.json")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1 or not 0 <= args.pause_s < 3600:
        ap.exit(2, "Error: --repeats and --rounds must be >= 1 and --pause-s in [0, 3600)\n")
    from kdnas_deploy.latency.pick import candidates, open_runners

    doc: dict[str, Any] = {"schema_version": 1, "cpu": cpu_name(), "reference_students": list(REFERENCE),
                           "rules": {k: list(v) for k, v in rules().items()}, "batch": 1, "seq": 128, "threads": 2,
                           "precisions": {}}  # fmt: skip
    models = sorted({m for ms in rules().values() for m in ms} | set(REFERENCE))
    for precision in args.precisions.split(","):
        usable, unavailable = candidates("cpu", precision, 2)
        if len(usable) < 2:
            doc["precisions"][precision] = {"skipped": f"{len(usable)} usable backend(s)", "unavailable": unavailable}
            continue
        rows = []
        with tempfile.TemporaryDirectory(prefix="kdnas-pickbench-") as tmp:
            runners: dict[tuple[str, str], Any] = {}
            open_runners(runners, "cpu", precision, 2, usable, tuple(Architecture.parse(m) for m in models), Path(tmp))
            for i in range(args.repeats):
                rows.append(repetition(runners, args.rounds))
                print(
                    f"{precision} {i + 1}/{args.repeats}: reference {rows[-1]['reference_fastest']}, "
                    + ", ".join(f"{k} {rows[-1][k]['chosen']}" for k in rules()),
                    flush=True,
                )
                time.sleep(args.pause_s if i + 1 < args.repeats else 0)
            for runner in runners.values():
                runner.close()
        doc["precisions"][precision] = {"backends": usable, "summary": summarise(rows),
                                        "pick_seconds": pick_cost(precision), "repetitions": rows}  # fmt: skip
        atomic_write_json(args.json, doc)
    atomic_write_json(args.json, doc)
    for precision, res in doc["precisions"].items():
        print(precision, res.get("summary") or res.get("skipped"), res.get("pick_seconds", ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
