"""Every runtime a user could pick for the same teacher and student, in one interleaved run (issue 18).

Library code: :mod:`kdnas_deploy.export.peers` (the same as ``kdnas-deploy bench --peers``). Writes
tools/results/peers.json (schema_version, machine fingerprint, rows, headline, targets).

    python -m tools.bench_peers TEACHER_DIR STUDENT_DIR            # ~3-5 min at the defaults (b1 s128, 2 threads)
    python -m tools.bench_peers TEACHER_DIR STUDENT_DIR --quick    # seconds: a smoke run, timings meaningless
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kdnas_deploy.export.bench import BenchConfig
from kdnas_deploy.export.peers import format_peers, quick_config, run_peers
from kdnas_deploy.io import atomic_write_json
from tools._common import RESULTS, WORK, shown


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teacher", type=Path, help="Hugging Face folder of the teacher")
    ap.add_argument("student", type=Path, help="Hugging Face folder of the (searched, distilled) student")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 short rounds at seq 32 (for tests)")
    ap.add_argument("--deployable", default="fp32,bf16",
                    help="student precisions the headline may deploy (add int8 only for a student whose int8 "
                         "export passed its dev-metric check)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS / "peers.json")
    ap.add_argument("--work", type=Path, default=WORK / "peers", help="folder for the deployed models")
    args = ap.parse_args(argv)
    cfg = quick_config(args.threads) if args.quick else BenchConfig(batch=args.batch, seq=args.seq,
                                                                    threads=args.threads, rounds=args.rounds,
                                                                    block=args.block)  # fmt: skip
    args.work.mkdir(parents=True, exist_ok=True)
    doc = run_peers(args.teacher, args.student, cfg, workdir=args.work, deployable=args.deployable.split(","))
    doc.update(teacher=shown(args.teacher), student=shown(args.student))
    atomic_write_json(args.out, doc)
    print(format_peers(doc))
    print(f"wrote {shown(args.out)}")
    return doc


if __name__ == "__main__":
    main()
