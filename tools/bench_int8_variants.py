"""Which dynamic-int8 settings keep SST-2 accuracy (<= 1 point lost) and the int8 speedup?

Quantizes the O2 fp32 graph of a fine-tuned SST-2 model (from ``tools/bench_export.py``'s work folder) with
several ``quantize_dynamic`` settings, evaluates each on SST-2 dev, and times each against the fp32 graph
interleaved at batch 1, seq 128, 2 threads. Writes tools/results/export_int8_variants.json.

    python -m tools.bench_int8_variants --model TEACHER_DIR --fp32 work_artifacts/export/bench/main_model/ours-o2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from kdnas_deploy.export.bench import BenchConfig, run_bench
from kdnas_deploy.export.folders import load_hf_classifier, load_tokenizer
from kdnas_deploy.export.validate import check_metric
from kdnas_deploy.io import atomic_write_json
from kdnas_deploy.runtime.session import make_session
from tools._common import GLUE_DIR, RESULTS

MA = ["MatMul", "Attention"]


def _ffn_out(names: list[str]) -> list[str]:
    """The FFN output projections (``layer.i/output/dense``), where BERT's activation outliers live."""
    return [n for n in names if "/output/dense/" in n and "/attention/" not in n]


def _last_layer(names: list[str]) -> list[str]:
    layers = sorted({int(n.split("layer.")[1].split("/")[0]) for n in names if "layer." in n})
    last = f"layer.{layers[-1]}/" if layers else "\0"
    attn = [n for n in names if n.startswith("Attention_")]
    return [n for n in names if last in n] + (attn[-1:] if attn else [])


# name -> (quantize_dynamic kwargs, nodes to exclude given the graph's node names)
VARIANTS = {
    "per_tensor_all_ops": ({}, None),
    "per_tensor_matmul_attention": ({"op_types_to_quantize": MA}, None),
    "per_channel_all_ops": ({"per_channel": True}, None),
    "per_channel_matmul_attention": ({"per_channel": True, "op_types_to_quantize": MA}, None),
    "per_tensor_ma_fp32_ffn_out": ({"op_types_to_quantize": MA}, _ffn_out),
    "per_tensor_ma_fp32_last_layer": ({"op_types_to_quantize": MA}, _last_layer),
}


def quantize(src: Path, dst: Path, **kwargs) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}, **kwargs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--fp32", type=Path, required=True, help="our O2 fp32 export of --model")
    ap.add_argument("--data-dir", default=str(GLUE_DIR))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    ap.add_argument("--out", type=Path, default=RESULTS / "export_int8_variants.json")
    args = ap.parse_args()
    from kdnas_deploy.runtime.deploy import fused_operator_counts

    model, tok = load_hf_classifier(args.model), load_tokenizer(args.model)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="kdnas-int8-") as tmp:
        folders = {}
        import onnx

        names = [n.name for n in onnx.load(str(args.fp32 / "model.onnx"), load_external_data=False).graph.node]
        for name, (kwargs, exclude) in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            kwargs = {**kwargs, "nodes_to_exclude": exclude(names)} if exclude else kwargs
            d = Path(tmp) / name
            d.mkdir()
            shutil.copy2(args.fp32 / "config.json", d / "config.json")
            quantize(args.fp32 / "model.onnx", d / "model.onnx", **kwargs)
            m = check_metric(model, tok, make_session(d / "model.onnx"), "sst2", args.data_dir, force=True)
            ops = {k: v for k, v in fused_operator_counts(d / "model.onnx").items() if v}
            rows[name] = {"settings": {k: v for k, v in kwargs.items() if k != "nodes_to_exclude"},
                          "excluded_nodes": kwargs.get("nodes_to_exclude", []),
                          "metric_check": m.to_dict(), "fused_ops": ops,
                          "model_onnx_bytes": (d / "model.onnx").stat().st_size}
            print(f"{name:32s} acc {100 * m.before:.2f} -> {100 * m.after:.2f} (drop {m.drop_points:.2f})")
            folders[name] = d
        load0 = os.getloadavg()[0]
        cfg = BenchConfig(batch=1, seq=128, threads=2, rounds=args.rounds, block=5)
        timed = run_bench([args.fp32, *folders.values()], cfg)
        fp32_ms = timed[0]["median_ms"]
        for name, row in zip(folders, timed[1:], strict=True):
            rows[name].update(median_ms=row["median_ms"], p10_ms=row["p10_ms"], p90_ms=row["p90_ms"],
                              speedup_vs_fp32_ort=round(fp32_ms / row["median_ms"], 3))
            print(f"{name:32s} {row['median_ms']:.2f} ms ({fp32_ms / row['median_ms']:.2f}x vs fp32 {fp32_ms:.2f} ms)")
    atomic_write_json(args.out, {"schema_version": 1, "model": str(args.model), "fp32_median_ms": fp32_ms,
                                 "loadavg_1min_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
                                 "variants": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
