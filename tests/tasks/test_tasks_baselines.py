"""Trivial baselines (best constant predictor), retained gain and the weak-teacher check."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from kdnas_deploy.errors import DataError
from kdnas_deploy.tasks.baselines import (
    WEAK_MARGIN,
    retained_gain,
    retained_gains,
    task_baseline,
    trivial_baseline,
    weak_teacher,
)
from kdnas_deploy.tasks.metrics import f1


def test_classification_baselines_are_the_best_constant():
    labels = [1, 1, 1, 0, 0, 1, 0, 1]  # 5 positives of 8
    base = trivial_baseline(("accuracy", "f1", "matthews_correlation"), labels)
    assert base["accuracy"] == pytest.approx(5 / 8)  # majority class
    assert base["f1"] == pytest.approx(2 * 5 / (2 * 5 + 3))  # always positive
    assert base["matthews_correlation"] == 0.0


def test_majority_class_may_be_the_negative_one_and_f1_still_says_positive():
    labels = np.array([0] * 7 + [1] * 3)
    base = trivial_baseline(("accuracy", "f1"), labels)
    assert base["accuracy"] == pytest.approx(0.7)
    assert base["f1"] == pytest.approx(f1(np.ones(10, dtype=np.int64), labels))


def test_three_classes_and_regression():
    assert trivial_baseline(("accuracy",), [2, 2, 0, 1, 2], num_labels=3)["accuracy"] == pytest.approx(0.6)
    reg = trivial_baseline(("pearson", "spearmanr"), [0.5, 3.2, 4.9, 1.0], is_regression=True)
    assert reg == {"pearson": 0.0, "spearmanr": 0.0}


def test_bad_input_is_a_data_error():
    with pytest.raises(DataError, match="empty"):
        trivial_baseline(("accuracy",), [])
    with pytest.raises(DataError, match="unknown metric"):
        trivial_baseline(("bleu",), [1, 0])


def test_retained_gain():
    assert retained_gain(0.85, 0.90, 0.50) == pytest.approx(0.875)
    assert retained_gain(0.811, 0.880, 0.812) == pytest.approx(-0.001 / 0.068)  # the MRPC student
    assert retained_gain(0.6, 0.5, 0.5) is None and retained_gain(0.6, 0.4, 0.5) is None
    gains = retained_gains({"f1": 0.9, "accuracy": 0.8}, {"f1": 1.0, "accuracy": 0.8}, {"f1": 0.8, "accuracy": 0.7})
    assert gains["f1"] == pytest.approx(0.5) and gains["accuracy"] == pytest.approx(1.0)


def test_weak_teacher_margin():
    assert WEAK_MARGIN == 0.05
    weak = weak_teacher("accuracy", 0.552, 0.527)  # the NLI teacher
    assert weak.weak and "0.5520" in weak.message("rte") and "0.5270" in weak.message("rte")
    assert not weak_teacher("accuracy", 0.60, 0.50).weak
    assert not weak_teacher("matthews_correlation", 0.05, 0.0).weak  # exactly the margin is not within it
    assert weak_teacher("matthews_correlation", 0.049, 0.0).weak
    assert weak.to_dict()["weak"] is True


GLUE = Path(os.environ.get("KDNAS_TEST_GLUE_DIR", "/nonexistent"))


@pytest.mark.skipif(not (GLUE / "MRPC" / "dev.tsv").is_file(), reason="real GLUE data not available")
def test_mrpc_dev_baseline_is_always_paraphrase():
    from kdnas_deploy.tasks import get_task

    task = get_task("mrpc", GLUE)
    labels = np.asarray(task.load_split("dev")["label"])
    base = task_baseline(task, labels)
    pos = int(labels.sum())
    assert base["f1"] == pytest.approx(2 * pos / (pos + len(labels)))
    assert base["f1"] == pytest.approx(0.812, abs=0.001)  # the figure for always "paraphrase"
    assert base["accuracy"] == pytest.approx(pos / len(labels))


@pytest.mark.skipif(not (GLUE / "STS-B" / "dev.tsv").is_file(), reason="real GLUE data not available")
def test_stsb_and_cola_baselines():
    from kdnas_deploy.tasks import get_task

    stsb = get_task("stsb", GLUE)
    assert task_baseline(stsb, stsb.load_split("dev")["label"]) == {"pearson": 0.0, "spearmanr": 0.0}
    if (GLUE / "CoLA" / "dev.tsv").is_file():
        cola = get_task("cola", GLUE)
        assert task_baseline(cola, cola.load_split("dev")["label"])["matthews_correlation"] == 0.0
