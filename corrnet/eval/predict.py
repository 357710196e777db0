"""The network's pose without RANSAC: the kept rule and the robust pose, in one function.

:func:`predict` takes the network's logits (B, N) and the matches (B, N, 4) and returns the
kept matches, the essential matrix and the relative pose, batched, in torch, with no random
sampling and no Lightning.  The evaluation's ``corrnet`` and ``corrnet-8pt`` methods call it;
so may training validation.

* **Kept** (:func:`kept_matches`): logit > 0 among the valid (``mask``) matches; where a pair
  keeps fewer than :data:`FALLBACK_TOP_K`, its :data:`FALLBACK_TOP_K` best valid matches.
* **Weights**: the network's own eight-point weights on the kept matches (its ``weights``
  output: relu(tanh(logit)) on the last stage's matches, 0 on the ones it pruned; without it
  relu(tanh(logit))), at least :data:`MIN_WEIGHT` on a kept match (so a fallback or pruned
  match still counts a little), 0 elsewhere.
* **E**: :func:`corrnet.geometry.robust.robust_eight_point` on the kept matches: weighted
  eight-point starts on the top 8, 16, 32, 64, 128 and all kept matches, IRLS with a
  Geman-McClure kernel of the Sampson distance at scales 3e-3 then 1e-3 (normalised), the
  start of lowest robust cost, then robust Levenberg-Marquardt on the essential manifold.
  ``robust=False``: the plain weighted eight-point of the kept matches (the network's ``E``).
* **R, t**: :func:`corrnet.geometry.recover_pose`, the cheirality test on the robust inliers
  (kept matches with Sampson distance below 1e-3 squared; the kept ones where fewer than 5).

The settings were chosen on synthetic validation pairs only, never on real data; the
measurements are in docs/evaluation.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..geometry import recover_pose, weighted_eight_point
from ..geometry.checks import as_tensor
from ..geometry.robust import (
    DEFAULT_ITERATIONS,
    DEFAULT_KERNEL,
    DEFAULT_REFINE_STEPS,
    DEFAULT_SCALES,
    DEFAULT_STARTS,
    project_essential,
    robust_eight_point,
)

FALLBACK_TOP_K = 8
MIN_WEIGHT = 1e-3
"""Smallest weight of a kept match."""


@dataclass
class Prediction:
    """Batched output of :func:`predict` (B pairs, N matches; float64 geometry).

    logits (B, N); kept (B, N) bool; weights (B, N) the robust solver's final weights (the
    kept matches' prior weights with ``robust=False``);
    E (B, 3, 3) unit Frobenius norm on the essential manifold; R (B, 3, 3), t (B, 3) unit;
    inliers (B, N) bool, the matches the cheirality test used.
    """

    logits: torch.Tensor
    kept: torch.Tensor
    weights: torch.Tensor
    E: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    inliers: torch.Tensor


def kept_matches(
    logits: torch.Tensor, mask: torch.Tensor | None = None, at_least: int = FALLBACK_TOP_K
) -> torch.Tensor:
    """Matches the network keeps: logit > 0, or the ``at_least`` best when fewer are positive
    (default :data:`FALLBACK_TOP_K`; ties broken by index).  (B, N) -> (B, N) bool.

    ``mask`` (B, N) bool marks the valid matches (padding False); only those are kept.
    """
    logits = torch.as_tensor(logits)
    valid = (
        torch.ones_like(logits, dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool()
    )
    kept = (logits > 0) & valid
    ranked = torch.where(valid, logits.double(), -torch.inf)
    top = torch.argsort(-ranked, dim=-1, stable=True)[..., :at_least]
    fallback = torch.zeros_like(kept).scatter(-1, top, True) & valid
    few = kept.sum(-1, keepdim=True) < at_least
    return torch.where(few, fallback, kept)


def predict(
    logits: torch.Tensor,
    xs: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    robust: bool = True,
    scales: tuple[float, ...] = DEFAULT_SCALES,
    kernel: str = DEFAULT_KERNEL,
    iterations: int = DEFAULT_ITERATIONS,
    starts: tuple[int | None, ...] = DEFAULT_STARTS,
    refine_steps: int = DEFAULT_REFINE_STEPS,
) -> Prediction:
    """Kept matches, E and pose of B pairs from the network's logits (module docstring).

    Args:
        logits: (B, N) inlier logits of every input match.
        xs: (B, N, 4) matches [x1, y1, x2, y2], normalised coordinates.
        mask: (B, N) bool, the valid matches (padding False); default all.
        weights: (B, N) the network's eight-point weights (CorrNet's ``weights`` output:
            relu(tanh(logit)) on its last stage's matches, 0 on the pruned ones); default
            relu(tanh(logits)).
        robust: IRLS (default) or the plain weighted eight-point.
        scales, kernel, iterations, starts, refine_steps: the settings of
            :func:`corrnet.geometry.robust.robust_eight_point`.
    """
    logits = as_tensor("logits", logits, (None,), "(B, N)").double()
    xs = as_tensor("xs", xs, (None, 4), "(B, N, 4)").double()
    if logits.ndim != 2 or xs.ndim != 3 or xs.shape[:2] != logits.shape:
        raise ValueError(
            f"logits, xs: expected (B, N) and (B, N, 4), got {tuple(logits.shape)} "
            f"and {tuple(xs.shape)}"
        )
    if mask is not None and tuple(mask.shape) != tuple(logits.shape):
        raise ValueError(f"mask: expected shape {tuple(logits.shape)}, got {tuple(mask.shape)}")
    kept = kept_matches(logits, mask)
    if weights is None:
        weights = torch.tanh(logits)
    else:
        weights = as_tensor("weights", weights, (None,), "(B, N)").double()
        if weights.shape != logits.shape:
            raise ValueError(
                f"weights: expected shape {tuple(logits.shape)}, got {tuple(weights.shape)}"
            )
    weights = torch.where(kept, weights.clamp_min(MIN_WEIGHT), 0.0)
    # only the kept matches carry weight: solve on them (padded to the batch's largest count)
    m = max(int(kept.sum(-1).max()), 1)
    index = torch.argsort(-weights, dim=-1, stable=True)[:, :m]  # ties: in input order
    x_kept, w_kept = xs.gather(1, index[..., None].expand(-1, -1, 4)), weights.gather(1, index)
    slot = torch.arange(m, device=xs.device) < kept.sum(
        -1, keepdim=True
    )  # a pair's own kept matches
    if robust:
        fit = robust_eight_point(
            x_kept, w_kept, scales, kernel, iterations, starts, refine_steps, slot
        )
        E, inliers = fit.E, torch.zeros_like(kept).scatter(1, index, fit.inliers)
        weights = torch.zeros_like(weights).scatter(1, index, fit.weights)
    else:
        E, inliers = (
            project_essential(weighted_eight_point(x_kept, w_kept, validate=False, mask=slot)),
            kept,
        )
    R, t, _ = recover_pose(E, xs, inliers)
    return Prediction(logits, kept, weights, E, R, t, inliers)
