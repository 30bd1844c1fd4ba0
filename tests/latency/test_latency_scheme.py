import numpy as np
import pytest

from kdnas_deploy.latency.scheme import anchor_depths, decompose, interp_seq, piecewise


@pytest.mark.parametrize(
    "layers,anchors",
    [([1, 2, 3, 4, 5, 6], (1, 3, 6)), (list(range(1, 13)), (1, 3, 6, 9, 12)),
     ([2, 4], (2, 3, 4)), ([4, 5], (4, 5)), ([5], (5,))],
)
def test_anchor_depths(layers, anchors):
    assert anchor_depths(layers) == anchors


def test_piecewise_is_exact_at_anchors_and_linear_between():
    anchors = (1, 3, 6)
    values = np.array([[2.0, 4.0, 10.0], [1.0, 1.5, 2.0]])
    got = piecewise(np.array([1, 2, 3, 4, 6]), anchors, values[[0, 0, 0, 0, 0]])
    np.testing.assert_allclose(got, [2.0, 3.0, 4.0, 6.0, 10.0])
    got = piecewise(np.array([5.0, 1.0]), anchors, values[[1, 1]])
    np.testing.assert_allclose(got, [1.5 + 2 * 0.5 / 3, 1.0])


def test_decompose_gives_fixed_and_segment_costs():
    d = decompose((1, 3, 6), [2.0, 4.0, 10.0])
    assert d["fixed_ms"] == pytest.approx(1.0)
    assert [s["latency_ms_per_layer"] for s in d["per_layer_ms"]] == pytest.approx([1.0, 2.0])


def test_interp_seq():
    pred = np.array([[1.0, 3.0], [2.0, 2.0]])
    np.testing.assert_allclose(interp_seq(pred, [64, 128], 96), [2.0, 2.0])
    np.testing.assert_allclose(interp_seq(pred, [64, 128], 128), [3.0, 2.0])


def test_two_probe_anchoring_interpolates_in_log_latency():
    from kdnas_deploy.latency.anchor import anchor_scales

    table = {"latency_ms": 1.0, "large": {"latency_ms": 4.0}}
    now = {"latency_ms": 1.5, "large": {"latency_ms": 4.4}}  # slow state: small models hurt more
    f = anchor_scales(np.array([0.5, 1.0, 2.0, 4.0, 8.0]), table, now)
    np.testing.assert_allclose(f, [1.5, 1.5, 1.3, 1.1, 1.1])
    one = anchor_scales(np.array([0.5, 8.0]), {"latency_ms": 1.0}, now)
    np.testing.assert_allclose(one, [1.5, 1.5])
