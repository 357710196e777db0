"""OANet's mAP and the LightGlue pose AUC against hand computation and numerical integration."""

from __future__ import annotations

import numpy as np
import pytest

from corrnet.eval.metrics import accuracy_below, oanet_map, pose_auc


def test_oanet_map_is_a_mean_of_accuracies():
    errors = [1.0, 4.99, 5.0, 9.0, 14.0, 19.0, 45.0, 180.0]
    acc = {T: sum(e < T for e in errors) / len(errors) for T in (5, 10, 15, 20)}
    m = oanet_map(errors)
    assert m["mAP5"] == pytest.approx(acc[5])
    assert m["mAP10"] == pytest.approx((acc[5] + acc[10]) / 2)
    assert m["mAP20"] == pytest.approx((acc[5] + acc[10] + acc[15] + acc[20]) / 4)
    assert accuracy_below(errors, 5) == pytest.approx(2 / 8)


def _auc_by_integration(errors: np.ndarray, T: float) -> float:
    """Integrate the piecewise-linear recall curve on a fine grid."""
    e = np.concatenate([[0.0], np.sort(errors)])
    r = np.arange(e.size) / (e.size - 1)
    grid = np.linspace(0.0, T, 200001)
    # Recall is held flat after the last error below T (right=... keeps the last value).
    below = e < T
    curve = np.interp(grid, e[below], r[below])
    return float(np.trapezoid(curve, grid) / T)


def test_pose_auc_against_numerical_integration_and_closed_form():
    rng = np.random.default_rng(0)
    errors = np.abs(rng.normal(0, 8, size=200))
    auc = pose_auc(errors)
    for T in (5, 10, 20):
        assert auc[f"auc{T}"] == pytest.approx(_auc_by_integration(errors, T), abs=1e-6)
    # n errors evenly spread on (0, T]: the curve is the diagonal, AUC = 1/2.
    n = 1000
    assert pose_auc(np.arange(1, n + 1) * 20.0 / n, thresholds=(20,))["auc20"] == pytest.approx(
        0.5, abs=1e-3
    )
    assert pose_auc(np.zeros(10))["auc5"] == pytest.approx(1.0)
    assert pose_auc(np.full(10, 90.0))["auc20"] == 0.0


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="errors"):
        pose_auc([])
    with pytest.raises(ValueError, match="errors"):
        oanet_map([1.0, float("nan")])
    with pytest.raises(ValueError, match="5° steps"):
        oanet_map([1.0], thresholds=(12,))
