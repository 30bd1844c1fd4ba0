"""tools/bench_nncf_scope.py on a tiny random classifier and the built-in task: every setting scored beside
fp32 and written (that ``quantize_ir`` leaves the head in fp32: tests/export/test_export_openvino.py)."""

from __future__ import annotations

import json

import pytest

from tests.export.conftest import save_tiny_classifier


def test_every_setting_is_scored_beside_fp32_and_written(tmp_path):
    pytest.importorskip("nncf")
    from tools import bench_nncf_scope as tool

    folder = save_tiny_classifier(tmp_path / "hf")
    out = tmp_path / "nncf_scope.json"
    tool.main(["--student", f"builtin={folder}", "--out", str(out)])
    doc = json.loads(out.read_text())
    task = doc["tasks"]["builtin"]
    assert set(task["settings"]) == set(tool.SETTINGS) and task["dev_rows"] > 0
    for setting in task["settings"].values():
        assert 0.0 <= setting["agreement_with_fp32"] <= 1.0 and setting["calibration_rows"] >= 1
        assert task["main_metric"] in setting["metrics"]
