"""Fusion check for every (hidden, heads) pair of the shipped search spaces (presets), fp32 and int8 on CPU.

Writes tools/results/export_fusion.json. Run from the repo root:
    python -m tools.check_fusion
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kdnas_deploy.export.fusion import check_space_fusion, fusion_report
from kdnas_deploy.io import atomic_write_json
from kdnas_deploy.runtime.deploy import DeployConfig
from kdnas_deploy.space import SearchSpace
from tools._common import RESULTS

SPACES = ("bert-base", "minilm-l6")  # the shipped presets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS / "export_fusion.json")
    args = ap.parse_args()
    spaces = [SearchSpace.load(name) for name in SPACES]
    out = {"schema_version": 1, "configs": []}
    for config in (DeployConfig.cpu_fp32(), DeployConfig.cpu_int8()):
        results = {s.name: check_space_fusion(s, config) for s in spaces}
        out["configs"].append(fusion_report(results, config))
    out["all_fused"] = all(c["all_fused"] for c in out["configs"])
    path = atomic_write_json(args.out, out)
    for c in out["configs"]:
        for name, rows in c["spaces"].items():
            bad = [f"H={r['hidden_size']},A={r['num_heads']}" for r in rows if not r["ok"]]
            print(f"{c['deploy_config']['precision']:5s} {name:10s} {len(rows)} shapes, not fused: {bad or 'none'}")
    print(f"wrote {path}")
    return 0 if out["all_fused"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
