import numpy as np
import pytest

from kdnas_deploy.errors import DataError
from kdnas_deploy.tasks import compute_metrics


def test_accuracy_and_f1_from_logits():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    labels = np.array([0, 1, 0, 1])
    m = compute_metrics(("f1", "accuracy"), logits, labels)
    assert m["accuracy"] == 0.5
    assert m["f1"] == pytest.approx(0.5)  # tp=1 fp=1 fn=1


def test_matthews_matches_formula_and_degenerate_case():
    preds = np.array([1, 1, 0, 0, 1, 0, 1, 1])
    labels = np.array([1, 0, 0, 0, 1, 1, 1, 1])
    tp, tn, fp, fn = 4, 2, 1, 1
    expected = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute_metrics(("matthews_correlation",), preds, labels)["matthews_correlation"] == pytest.approx(
        expected
    )
    assert (
        compute_metrics(("matthews_correlation",), np.ones(4, int), labels[:4])["matthews_correlation"] == 0.0
    )


def test_pearson_spearman_for_regression():
    x = np.array([0.1, 0.5, 0.2, 0.9])
    m = compute_metrics(("pearson", "spearmanr"), x[:, None] * 2 + 1, x, is_regression=True)
    assert m["pearson"] == pytest.approx(1.0) and m["spearmanr"] == pytest.approx(1.0)


def test_metric_errors():
    with pytest.raises(DataError):
        compute_metrics(("accuracy",), np.array([1, 0]), np.array([1]))
    with pytest.raises(DataError):
        compute_metrics(("bleu",), np.array([1]), np.array([1]))
