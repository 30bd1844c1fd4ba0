"""``headroom: auto``: the share of a budget the search keeps free, from the table's validation report."""

from __future__ import annotations

import json

import pytest

from kdnas_deploy.latency.headroom import AUTO_CEILING, AUTO_FLOOR, auto_headroom


def _table_with_report(tmp_path, ratios, raw=True):
    table = tmp_path / "cpu-t.json"
    table.write_text("{}")
    key = "raw_predicted_ms" if raw else "predicted_ms"
    points = [{key: 2.0, "measured_ms": 2.0 * (1 + r)} for r in ratios]
    (tmp_path / "cpu-t.validation.json").write_text(json.dumps({"points": points}))
    return table


def test_auto_is_the_p95_under_prediction_of_the_held_out_models(tmp_path):
    ratios = [0.01 * i for i in range(-5, 15)] + [0.30]  # 21 models, one far under-predicted
    share, why = auto_headroom(_table_with_report(tmp_path, ratios))
    assert share == pytest.approx(0.14, abs=1e-4)  # np.percentile(..., 95) of the 21 ratios
    assert "p95" in why and "21 held-out models of cpu-t.json" in why


def test_auto_is_kept_between_its_floor_and_its_ceiling(tmp_path):
    assert auto_headroom(_table_with_report(tmp_path, [0.0] * 30))[0] == AUTO_FLOOR  # an exact table
    (tmp_path / "b").mkdir()
    assert auto_headroom(_table_with_report(tmp_path / "b", [0.4] * 30, raw=False))[0] == AUTO_CEILING


@pytest.mark.parametrize("report", [None, "{broken", json.dumps({"points": [{"measured_ms": 1.0}] * 30}),
                                    json.dumps({"points": [{"predicted_ms": 1.0, "measured_ms": 1.1}] * 5}),
                                    json.dumps([1, 2])])  # fmt: skip
def test_a_table_without_a_usable_report_gets_the_ceiling(tmp_path, report):
    table = tmp_path / "t.json"
    table.write_text("{}")
    if report is not None:
        (tmp_path / "t.validation.json").write_text(report)
    share, why = auto_headroom(table)
    assert share == AUTO_CEILING and "the ceiling" in why and "t.json" in why
