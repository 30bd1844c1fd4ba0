"""The weak-teacher warning of ``teacher finetune`` and the baseline of ``evaluate`` (tiny real teacher)."""

from __future__ import annotations

import logging

import pytest

from kdnas_deploy.distill.finetune import check_teacher_strength


def test_weak_teacher_warns_loudly(builtin_small, caplog):
    task = builtin_small[0]
    with caplog.at_level(logging.WARNING, logger="kdnas_deploy"):
        weak = check_teacher_strength(task, {"accuracy": 0.53}, {"accuracy": 0.51})
    assert weak.weak and "WARNING: weak teacher" in caplog.text and "0.5100" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kdnas_deploy"):
        assert not check_teacher_strength(task, {"accuracy": 0.9}, {"accuracy": 0.51}).weak
    assert "weak teacher" not in caplog.text


def test_evaluate_reports_the_baseline_of_the_scored_split(tiny_teacher, builtin_small, tmp_path):
    import json

    from kdnas_deploy.distill.evaluate import evaluate_model

    task = builtin_small[0]
    doc = evaluate_model(tiny_teacher, task, "dev", max_seq_len=32, json_path=tmp_path / "m.json", progress=False)
    labels = list(task.load_split("dev")["label"])
    majority = max(labels.count(0), labels.count(1)) / len(labels)
    assert doc["baseline"] == {"accuracy": pytest.approx(majority)}
    assert json.loads((tmp_path / "m.json").read_text())["baseline"]["accuracy"] == pytest.approx(majority)
