"""Does every layer's attention fuse for a given shape? Checked through the deployed path itself.

ORT's BERT fusion recognises the attention subgraph from its reshape constants (heads, head size); whether it
succeeds depends on the (hidden, heads) pair only, not on the depth or the FFN size. :func:`fusion_ok` answers
for one architecture (exporting a 2-layer probe once per pair and deploy config, cached in memory and on disk,
keyed by the onnxruntime/optimum versions); :func:`check_space_fusion` covers every pair of a search space
(``tools/check_fusion.py`` records it for the shipped spaces). Nothing in the search calls these: the
latency tables price every shape through the same path, fused or not.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.io import atomic_write_json
from kdnas_deploy.runtime.deploy import DeployConfig, attention_fused, deploy

FUSION_SCHEMA_VERSION = 1
PROBE_LAYERS = 2
CACHE_ENV = "KDNAS_CACHE_DIR"


@dataclass(frozen=True)
class FusionResult:
    hidden_size: int
    num_heads: int
    head_dim: int
    probe_layers: int
    fused_attention: int
    fused_ops: dict[str, int]
    ok: bool


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnxruntime", "optimum", "optimum-onnx", "transformers", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            try:
                out[pkg] = version(pkg.replace("onnxruntime", "onnxruntime-gpu"))
            except PackageNotFoundError:
                out[pkg] = "absent"
    return out


def probe_fusion(hidden: int, heads: int, config: DeployConfig | None = None, ffn: int | None = None) -> FusionResult:
    """Export a seeded random ``PROBE_LAYERS``-layer student of this shape and count fused attention nodes."""
    from kdnas_deploy.student import build_student

    config = config or DeployConfig.cpu_fp32()
    arch = Architecture(PROBE_LAYERS, hidden, heads, ffn or 2 * hidden)
    model = build_student(arch, seed=0, vocab_size=512)
    with tempfile.TemporaryDirectory(prefix="kdnas-fusion-") as tmp:
        out = deploy(model, Path(tmp) / "probe", config)
    n = sum(out.fused_ops.get(k, 0) for k in ("Attention", "MultiHeadAttention", "QAttention"))
    ok = attention_fused(out.fused_ops, PROBE_LAYERS)
    return FusionResult(hidden, heads, hidden // heads, PROBE_LAYERS, n, out.fused_ops, ok)


def _cache_file() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "kdnas-deploy")
    return Path(root) / "fusion.json"


def _cache_key(hidden: int, heads: int, config: DeployConfig) -> str:
    c = config
    v = _versions()
    versions = f"ort={v['onnxruntime']}|opt={v['optimum-onnx']}"
    return f"{hidden}x{heads}|{c.optimize}|{c.precision}|{c.device}|{c.opset}|{versions}"


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and data.get("schema_version") == FUSION_SCHEMA_VERSION else {}
    except (OSError, json.JSONDecodeError):
        return {}


@lru_cache(maxsize=256)
def _fusion_ok_cached(hidden: int, heads: int, config: DeployConfig) -> bool:
    key = _cache_key(hidden, heads, config)
    cache = _read_cache()
    entries = cache.get("entries", {})
    if key in entries:
        return bool(entries[key])
    ok = probe_fusion(hidden, heads, config).ok
    entries = {**_read_cache().get("entries", {}), key: ok}
    try:
        atomic_write_json(_cache_file(), {"schema_version": FUSION_SCHEMA_VERSION, "entries": entries})
    except OSError:
        pass  # an unwritable cache only costs a re-probe
    return ok


def fusion_ok(arch: Architecture, config: DeployConfig | None = None) -> bool:
    """True when every attention layer of ``arch`` becomes one fused operator on the deployed path."""
    return _fusion_ok_cached(arch.hidden_size, arch.num_heads, config or DeployConfig.cpu_fp32())


def check_space_fusion(space: Any, config: DeployConfig | None = None, progress: bool = True) -> list[FusionResult]:
    """Probe every (hidden, heads) pair of a :class:`~kdnas_deploy.space.SearchSpace`."""
    from tqdm.auto import tqdm

    config = config or DeployConfig.cpu_fp32()
    pairs = [(h, a) for h, heads in space.heads for a in heads]
    return [
        probe_fusion(h, a, config, ffn=min(space.ffn))
        for h, a in tqdm(pairs, desc=f"fusion {space.name}", disable=not progress, unit="shape")
    ]


def fusion_report(results_by_space: dict[str, list[FusionResult]], config: DeployConfig) -> dict[str, Any]:
    return {
        "schema_version": FUSION_SCHEMA_VERSION,
        "deploy_config": config.to_dict(),
        "versions": _versions(),
        "all_fused": all(r.ok for rs in results_by_space.values() for r in rs),
        "spaces": {name: [asdict(r) for r in rs] for name, rs in results_by_space.items()},
    }
