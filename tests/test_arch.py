import json

import pytest

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import ArchitectureError
from kdnas_deploy.student import build_student


def test_parse_forms_agree(tmp_path):
    a = Architecture(4, 256, 4, 1024)
    p = tmp_path / "a.json"
    p.write_text(a.to_json())
    assert Architecture.parse("L=4,H=256,A=4,F=1024") == a
    assert Architecture.parse(str(p)) == a
    assert Architecture.parse(a.to_json()) == a
    assert Architecture.parse("num_layers=4 hidden_size=256 num_heads=4 ffn_size=1024") == a
    assert json.loads(a.to_json())["schema_version"] == 1


@pytest.mark.parametrize(
    "text,needle",
    [
        ("L=4,H=250,A=4,F=1024", "does not divide"),
        ("L=4,H=256,A=4", "missing ffn_size"),
        ("L=4,H=256,A=4,F=x", "not an integer"),
        ("L=4,H=256,A=4,F=1024,Q=3", "unknown architecture key"),
        ("L=0,H=256,A=4,F=1024", "positive"),
        ("missing.json", "not found"),
        ("{not json", "malformed"),
    ],
)
def test_bad_architectures(text, needle):
    with pytest.raises(ArchitectureError, match=needle):
        Architecture.parse(text)


@pytest.mark.parametrize("arch", [Architecture(1, 128, 4, 384), Architecture(3, 384, 12, 1536)])
def test_param_count_matches_transformers(arch):
    model = build_student(arch, num_labels=3)
    assert arch.num_parameters(num_labels=3) == sum(p.numel() for p in model.parameters())
    assert Architecture.from_config(model.config) == arch
    assert model.config._attn_implementation == "eager"


def test_flops_scale():
    a = Architecture(2, 256, 4, 1024)
    assert a.flops(batch=2) == 2 * a.flops(batch=1)
    assert Architecture(4, 256, 4, 1024).flops() > a.flops()
    # 2 layers at seq 128: QKV+O (4*h*h) + FFN (2*h*f) matmuls + attention scores/context
    per_layer = 2 * 128 * (4 * 256 * 256 + 2 * 256 * 1024) + 4 * 128 * 128 * 256
    assert a.flops(seq=128) == 2 * per_layer + 2 * (256 * 256 + 256 * 2)


def test_roundtrip_bert_config():
    a = Architecture(2, 192, 6, 768)
    cfg = a.to_bert_config(num_labels=2)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (2, 192, 6, 768)
    assert Architecture.from_config(cfg) == a
