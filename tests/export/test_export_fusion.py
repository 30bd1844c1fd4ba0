"""Attention fusion for every (hidden, heads) pair of the shipped spaces, through the deployed path."""

from __future__ import annotations

import json

import pytest

from kdnas_deploy.arch import Architecture
from kdnas_deploy.export.fusion import _fusion_ok_cached, check_space_fusion, fusion_ok, probe_fusion
from kdnas_deploy.runtime.deploy import DeployConfig
from kdnas_deploy.space import SearchSpace


def test_probe_counts_fused_attention_per_layer():
    res = probe_fusion(192, 12)  # head size 16, the smallest the minilm-l6 space allows
    assert res.ok and res.fused_attention == res.probe_layers == 2 and res.head_dim == 16
    assert res.fused_ops["SkipLayerNormalization"] == 2 * res.probe_layers


def test_fusion_ok_is_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("KDNAS_CACHE_DIR", str(tmp_path))
    _fusion_ok_cached.cache_clear()
    assert fusion_ok(Architecture(4, 128, 4, 384)) is True
    entries = json.loads((tmp_path / "fusion.json").read_text())["entries"]
    assert any(k.startswith("128x4|O2|fp32|cpu|18|") and v is True for k, v in entries.items())
    # a cached entry is what later calls (other processes too) answer from
    key = next(iter(entries))
    (tmp_path / "fusion.json").write_text(json.dumps({"schema_version": 1, "entries": {key: False}}))
    _fusion_ok_cached.cache_clear()
    assert fusion_ok(Architecture(6, 128, 4, 1536)) is False
    _fusion_ok_cached.cache_clear()


def test_unoptimized_graph_reports_no_fusion():
    assert probe_fusion(128, 4, DeployConfig("none", "fp32", "cpu")).ok is False


@pytest.mark.slow
@pytest.mark.parametrize("space_file", ["minilm-l6.yaml", "bert-base.yaml"])
def test_every_shape_of_shipped_spaces_fuses(repo_root, space_file):
    space = SearchSpace.from_yaml(repo_root / "configs" / "spaces" / space_file)
    results = check_space_fusion(space, progress=False)
    assert len(results) == sum(len(a) for _, a in space.heads)
    assert [f"H={r.hidden_size},A={r.num_heads}" for r in results if not r.ok] == []


def test_shipped_fusion_result_covers_the_spaces(repo_root):
    path = repo_root / "tools" / "results" / "export_fusion.json"
    if not path.is_file():
        pytest.skip("tools/results/export_fusion.json not generated yet")
    data = json.loads(path.read_text())
    for cfg in data["configs"]:
        for f in sorted((repo_root / "configs" / "spaces").glob("*.yaml")):
            space = SearchSpace.from_yaml(f)
            got = {(r["hidden_size"], r["num_heads"]) for r in cfg["spaces"][space.name]}
            assert got == {(h, a) for h, heads in space.heads for a in heads}
