"""Benchmark of issue 2's latency-table targets; writes tools/results/latency_bench.json (+ PNG).

Steps (each result is merged into the results JSON as soon as it is measured, so steps can run separately):

* ``build``      ``kdnas-deploy latency build`` of the default space (preset ``minilm-l6``) at batch 1,
                 seq 128 for each precision: wall time (target <= 300 s) and peak RSS of the process tree
                 (target < 2 GB). The tables are written to ``--tables`` (the shipped ones in latency_tables/).
* ``validate``   ``kdnas-deploy latency validate --n 30`` of each table: re-anchored accuracy (targets >= 95%
                 within +-10%, MAPE <= 5%), raw accuracy and the noise floor, report JSON + PNG beside the table.
* ``throughput`` ``LatencyTable.predict`` on 1,000,000 architectures (target >= 100,000 / s).
* ``memory-bert-base`` peak RSS of a build whose models are up to BERT-base size (L=1..12, H=768, A=12, F=3072).
* ``memory-stages`` each step of the deployed path on one L=12,H=768 model in its own fresh process, peak RSS
                 from the kernel (``ru_maxrss``): export (weights streamed or not, model kept or consumed as the
                 latency build does), fusions (lean and ORTOptimizer's own), int8.

Run from the repository root (timing steps alone on the machine: nothing else running):
    python -m tools.bench_latency --steps build,validate --precision fp32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kdnas_deploy.io import atomic_write_json
from tools._common import RESULTS, ROOT, kdnas_cli, run_tracked, shown

RESULT_FILE = RESULTS / "latency_bench.json"
SPACE = "minilm-l6"  # the preset name: same space as configs/spaces/minilm-l6.yaml
TARGETS = {
    "build_seconds_max": 300.0,
    "peak_rss_gb_max": 2.0,
    "within_10pct_min": 0.95,
    "mape_pct_max": 5.0,
    "predict_archs_per_s_min": 100_000,
}


def table_path(tables: Path, precision: str) -> Path:
    return tables / f"cpu-minilm-l6-{precision}-b1-s128.json"


def run_measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``: wall time and peak RSS of its process tree (sampled every 50 ms); exits if it fails."""
    code, peak_gb, seconds = run_tracked(cmd)
    if code:
        raise SystemExit(f"command failed with exit code {code}: {' '.join(cmd)}")
    return {"seconds": round(seconds, 2), "peak_rss_gb": round(peak_gb, 3), "command": " ".join(cmd)}


def step_build(precision: str, tables: Path) -> dict[str, Any]:
    out = table_path(tables, precision)
    cmd = kdnas_cli("latency", "build", "--space", SPACE, "--device", "cpu",
           "--batch", "1", "--seq", "128", "--precision", precision, "--out", str(out))  # fmt: skip
    res = run_measured(cmd)
    data = json.loads(out.read_text())
    res.update(table=shown(out), entries=len(data["entries"]),
               table_build_seconds=data["measurement"]["build_seconds"],
               unsettled_entries=data["measurement"]["unsettled_entries"],
               state_changes=data["measurement"]["state_changes"], probe=data["probe"]["latency_ms"])  # fmt: skip
    res["meets_time"] = res["seconds"] <= TARGETS["build_seconds_max"]
    res["meets_memory"] = res["peak_rss_gb"] < TARGETS["peak_rss_gb_max"]
    return res


def step_validate(precision: str, tables: Path, n: int, seed: int) -> dict[str, Any]:
    table = table_path(tables, precision)
    report = table.with_name(table.stem + ".validation.json")
    plot = table.with_name(table.stem + ".validation.png")
    cmd = kdnas_cli("latency", "validate", str(table), "--n", str(n), "--seed",
           str(seed), "--report", str(report), "--plot", str(plot))  # fmt: skip
    res = run_measured(cmd)
    rep = json.loads(report.read_text())
    keys = ("n", "mape_pct", "within_5pct", "within_10pct", "spearman", "max_abs_error_pct", "raw_mape_pct",
            "raw_within_5pct", "raw_within_10pct", "raw_spearman", "noise_floor_pct", "anchor_scale",
            "unsettled_models", "scheme_ablation")  # fmt: skip
    res.update({k: rep[k] for k in keys}, report=shown(report), plot=shown(plot))
    res["meets_accuracy"] = rep["within_10pct"] >= TARGETS["within_10pct_min"] and rep["mape_pct"] <= TARGETS[
        "mape_pct_max"
    ]
    return res


def step_throughput(tables: Path, n: int = 1_000_000) -> dict[str, Any]:
    import numpy as np

    from kdnas_deploy.latency.table import LatencyTable

    path = next((p for p in (table_path(tables, "fp32"), table_path(tables, "int8")) if p.is_file()), None)
    if path is None:
        raise SystemExit("throughput needs a built table; run the build step first")
    table = LatencyTable.load(path)
    archs = table.space.sample(n, rng=0, replace=True)
    table.predict(archs[:1000])
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = table.predict(archs)
        rates.append(n / (time.perf_counter() - t0))
    rows, depths = table.indices(archs)
    t0 = time.perf_counter()
    table.predict_indices(rows, depths)
    core = n / (time.perf_counter() - t0)
    return {
        "table": shown(path),
        "archs": n,
        "archs_per_s": round(float(np.median(rates)), 0),
        "archs_per_s_runs": [round(r, 0) for r in rates],
        "index_core_archs_per_s": round(core, 0),
        "checksum_ms": round(float(out.sum()), 3),
        "meets_target": float(np.median(rates)) >= TARGETS["predict_archs_per_s_min"],
    }


def step_memory_bert_base(precision: str) -> dict[str, Any]:
    space = {
        "name": "bert-base-largest",
        "description": "The largest layer variant of the bert-base space, 1-12 layers (memory check).",
        "choices": {"num_layers": list(range(1, 13)), "hidden_size": [768], "num_heads": [12], "ffn_size": [3072]},
    }
    with tempfile.TemporaryDirectory(prefix="kdnas-bench-") as tmp:
        path = Path(tmp) / "space.json"
        path.write_text(json.dumps(space))  # YAML is a superset of JSON
        out = Path(tmp) / "t.json"
        cmd = kdnas_cli("latency", "build", "--space", str(path), "--rounds", "1",
               "--precision", precision, "--out", str(out), "--quiet")  # fmt: skip
        res = run_measured(cmd)
        res["anchor_depths"] = json.loads(out.read_text())["scheme"]["anchor_depths"]
    res["meets_memory"] = res["peak_rss_gb"] < TARGETS["peak_rss_gb_max"]
    return res


STAGE_CODE = {
    "export_unstreamed": "m = build_student(Architecture(12, 768, 12, 3072), seed=0); "
    "export_onnx(m, work / 'raw', stream_weights=False)",
    "export": "m = build_student(Architecture(12, 768, 12, 3072), seed=0); export_onnx(m, work / 'raw')",
    "export_consumed": "m = build_student(Architecture(12, 768, 12, 3072), seed=0); "
    "export_onnx(m, work / 'raw', consume_model=True)",
    "fusion_lean": "optimize_onnx(work / 'raw', work / 'lean', DeployConfig.cpu_fp32(), lean=True)",
    "fusion_ortoptimizer": "optimize_onnx(work / 'raw', work / 'ort', DeployConfig.cpu_fp32(), lean=False)",
    "int8_quantize": "quantize_int8(work / 'lean' / 'model.onnx', work / 'q.onnx')",
}
STAGE_PRELUDE = (
    "import json, resource; from pathlib import Path; work = Path({work!r})\n"
    "from kdnas_deploy.arch import Architecture\nfrom kdnas_deploy.student import build_student\n"
    "from kdnas_deploy.runtime.deploy import DeployConfig, export_onnx, optimize_onnx, quantize_int8\n"
    "from kdnas_deploy.runtime.deploy import quiet_loggers\n"
    "with quiet_loggers():\n    {code}\n"
    "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20))\n"
)


def step_memory_stages() -> dict[str, Any]:
    """Peak RSS of each deployed-path step for one BERT-base-size model, each in a fresh process."""
    out: dict[str, Any] = {"model": "L=12,H=768,A=12,F=3072 (440 MB of fp32 weights)", "unit": "GB, ru_maxrss"}
    with tempfile.TemporaryDirectory(prefix="kdnas-stages-") as work:
        for name, code in STAGE_CODE.items():
            script = STAGE_PRELUDE.format(work=work, code=code)  # runs with cwd ROOT: `-c` puts it on sys.path
            proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"stage {name} failed:\n{proc.stderr[-2000:]}")
            out[name] = round(float(proc.stdout.strip().splitlines()[-1]), 2)
            print(name, out[name], flush=True)
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reps = [(p, results["validate"][p]) for p in ("fp32", "int8") if p in results.get("validate", {})]
    if not reps:
        return
    fig, axes = plt.subplots(1, len(reps), figsize=(5.5 * len(reps), 5), squeeze=False)
    for ax, (prec, res) in zip(axes[0], reps, strict=True):
        rep = json.loads((ROOT / res["report"]).read_text())
        m = [p["measured_ms"] for p in rep["points"]]
        pr = [p["predicted_ms"] for p in rep["points"]]
        raw = [p["raw_predicted_ms"] for p in rep["points"]]
        lo, hi = min(m + pr + raw) * 0.85, max(m + pr + raw) * 1.15
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="tab:green", alpha=0.15,
                        label="±10%")  # fmt: skip
        ax.plot([lo, hi], [lo, hi], "k", lw=0.8)
        ax.scatter(m, raw, marker="x", s=14, color="tab:gray", label=f"raw: MAPE {rep['raw_mape_pct']:.1f}%")
        ax.scatter(m, pr, s=18, label=f"re-anchored: MAPE {rep['mape_pct']:.1f}%, {100 * rep['within_10pct']:.0f}%"
                   " in ±10%")  # fmt: skip
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured ms", ylabel="predicted ms",
               title=f"CPU {prec}, b1 s128, n={rep['n']} held-out (noise floor {rep['noise_floor_pct']:.1f}%)")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="build,validate,throughput")
    ap.add_argument("--precision", default="fp32,int8")
    ap.add_argument("--tables", default=str(ROOT / "latency_tables"))
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=str(RESULT_FILE))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results_path = Path(args.results)
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.update(schema_version=1, targets=TARGETS)
    tables = Path(args.tables)
    precisions = [p for p in args.precision.split(",") if p]
    steps = [s for s in args.steps.split(",") if s]
    unknown = set(steps) - {"build", "validate", "throughput", "memory-bert-base", "memory-stages"}
    if unknown:
        raise SystemExit(f"unknown step(s): {', '.join(sorted(unknown))}")

    def save() -> None:
        results["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_json(results_path, results)

    for prec in precisions:
        if "build" in steps:
            results.setdefault("build", {})[prec] = step_build(prec, tables)
            save()
        if "validate" in steps:
            results.setdefault("validate", {})[prec] = step_validate(prec, tables, args.n, args.seed)
            save()
    if "throughput" in steps:
        results["throughput"] = step_throughput(tables)
        save()
    if "memory-bert-base" in steps:
        old = results.get("memory_bert_base", {})
        if "peak_rss_gb" in old:  # the single-precision layout of earlier runs
            results.setdefault("earlier_runs", []).append({"memory_bert_base_before_lean_fusion": old})
            old = {}
        for prec in precisions:
            old[prec] = step_memory_bert_base(prec)
            results["memory_bert_base"] = old
            save()
    if "memory-stages" in steps:
        results["memory_stages_bert_base"] = step_memory_stages()
        save()
    plot(results, results_path.with_suffix(".png"))
    print(json.dumps({k: v for k, v in results.items() if k != "targets"}, indent=1)[:4000])


if __name__ == "__main__":
    main()
