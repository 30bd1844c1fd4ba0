"""Fusion check for every (hidden, heads) pair of the shipped search spaces, fp32 and int8 on CPU.

Writes tools/results/export_fusion.json. Run from the repo root:
    flock /tmp/kdnas-cpu.lock python tools/check_fusion.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdnas_deploy.export.fusion import check_space_fusion, fusion_report  # noqa: E402
from kdnas_deploy.io import atomic_write_json  # noqa: E402
from kdnas_deploy.runtime.deploy import DeployConfig  # noqa: E402
from kdnas_deploy.space import SearchSpace  # noqa: E402


def main() -> int:
    spaces = [SearchSpace.from_yaml(p) for p in sorted((ROOT / "configs" / "spaces").glob("*.yaml"))]
    out = {"schema_version": 1, "configs": []}
    for config in (DeployConfig.cpu_fp32(), DeployConfig.cpu_int8()):
        results = {s.name: check_space_fusion(s, config) for s in spaces}
        out["configs"].append(fusion_report(results, config))
    out["all_fused"] = all(c["all_fused"] for c in out["configs"])
    path = atomic_write_json(ROOT / "tools" / "results" / "export_fusion.json", out)
    for c in out["configs"]:
        for name, rows in c["spaces"].items():
            bad = [f"H={r['hidden_size']},A={r['num_heads']}" for r in rows if not r["ok"]]
            print(f"{c['deploy_config']['precision']:5s} {name:10s} {len(rows)} shapes, not fused: {bad or 'none'}")
    print(f"wrote {path}")
    return 0 if out["all_fused"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
