"""Pose accuracy metrics as the field reports them.

Two different numbers travel under similar names in papers:

* ``mAP5 / mAP10 / mAP20`` -- OANet's "mAP": the *mean of accuracies* at 5° steps.
  mAP5 = acc(<5°), mAP10 = mean(acc(<5°), acc(<10°)),
  mAP20 = mean(acc(<5°), acc(<10°), acc(<15°), acc(<20°)).  Reported by OANet, CLNet,
  NCMNet and most correspondence-pruning papers.
* ``auc5 / auc10 / auc20`` -- the area under the cumulative error curve up to the
  threshold, normalised by the threshold (SuperGlue / LightGlue), a stricter number.

Errors are the per-pair pose errors in degrees, max(rotation, translation) as OANet uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _errors(errors: Sequence[float] | np.ndarray) -> np.ndarray:
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise ValueError("errors: expected at least one pose error, got none")
    if np.isnan(e).any() or (e < 0).any():
        raise ValueError("errors: expected non-negative pose errors in degrees (no NaN)")
    return e


def accuracy_below(errors: Sequence[float] | np.ndarray, threshold_deg: float) -> float:
    """Fraction of pairs whose error (P,) in degrees is strictly below ``threshold_deg``."""
    return float((_errors(errors) < threshold_deg).mean())


def oanet_map(
    errors: Sequence[float] | np.ndarray, thresholds: Sequence[int] = (5, 10, 20)
) -> dict[str, float]:
    """OANet's "mAP": for each threshold T, the mean of the accuracies at 5°, 10°, ..., T.

    Returns ``{"mAP5": ..., "mAP10": ..., "mAP20": ...}`` as fractions in [0, 1].
    """
    e = _errors(errors)
    out = {}
    for T in thresholds:
        if T <= 0 or T % 5:
            raise ValueError(
                f"thresholds: OANet's mAP is defined on 5° steps (5, 10, ...), got {T}"
            )
        out[f"mAP{T}"] = float(np.mean([(e < s).mean() for s in range(5, T + 1, 5)]))
    return out


def pose_auc(
    errors: Sequence[float] | np.ndarray, thresholds: Sequence[float] = (5, 10, 20)
) -> dict[str, float]:
    """Area under the recall-vs-error curve up to each threshold, divided by it.

    The curve joins (0, 0) and the points (eᵢ, i/n) of the sorted errors by straight lines and
    is held flat from the last error below the threshold up to the threshold (the trapezoid
    rule as SuperGlue and LightGlue compute it).  Returns ``{"auc5": ..., ...}`` in [0, 1].
    """
    e = np.sort(_errors(errors))
    recall = np.arange(1, e.size + 1) / e.size
    e = np.concatenate([[0.0], e])
    recall = np.concatenate([[0.0], recall])
    out = {}
    for T in thresholds:
        if not T > 0:
            raise ValueError(f"thresholds: expected positive angles in degrees, got {T}")
        k = int(np.searchsorted(e, T))
        xs = np.concatenate([e[:k], [T]])
        ys = np.concatenate([recall[:k], [recall[k - 1]]])
        out[f"auc{T:g}"] = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0) / T)
    return out
