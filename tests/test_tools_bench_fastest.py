"""tools/bench_fastest.py's judgement on synthetic run and peers documents (no measuring)."""

from __future__ import annotations

import pytest

from tools.bench_fastest import deployable, targets


def _doc(loss_points: float, after: float, fastest: float = 3.2, path: float = 2.1) -> dict:
    devices = [{"name": "cpu-int8", "precision": "int8", "metric_loss_points": loss_points,
                "metric_check": {"metric": "accuracy", "before": 0.90, "after": after, "ok": True}},
               {"name": "cpu-bf16", "precision": "bf16", "metric_loss_points": 0.1,
                "metric_check": {"metric": "accuracy", "before": 0.90, "after": 0.899, "ok": False}}]  # fmt: skip
    peers = {"headline": {"deployed_student": "student/openvino-int8", "teacher_fastest": "teacher/openvino-int8"},
             "targets": {"student_path_vs_student_ort_fp32": {"value": path},
                         "student_vs_teacher_fastest": {"value": fastest}}}  # fmt: skip
    return {"devices": devices, "peers": peers, "teacher": {"dev_metric": 0.91}, "student": {"dev_metric": 0.90}}


def test_lossy_precisions_are_deployable_only_where_their_export_passed_the_metric_check():
    assert deployable(_doc(0.2, 0.898)["devices"]) == ["fp32", "int8"]
    assert deployable([]) == ["fp32"]


def test_both_targets_need_the_metric_on_the_deployed_path():
    good = targets(_doc(0.2, 0.898))
    assert good["student_path_vs_student_ort_fp32"]["met"] and good["student_vs_teacher_fastest"]["met"]
    assert good["student_vs_teacher_fastest"]["retained"] == pytest.approx(0.898 / 0.91, abs=1e-4)
    lossy = targets(_doc(0.8, 0.86))  # fast enough, but int8 cost 0.8 points and retains 94.5%
    assert not lossy["student_path_vs_student_ort_fp32"]["met"]
    assert not lossy["student_vs_teacher_fastest"]["met"]
    slow = targets(_doc(0.2, 0.898, fastest=2.4, path=1.8))
    assert not slow["student_path_vs_student_ort_fp32"]["met"] and not slow["student_vs_teacher_fastest"]["met"]
