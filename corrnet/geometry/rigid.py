"""Rigid 3-D geometry in torch: weighted Kabsch / Procrustes, transforms, registration errors.

A rigid transform maps a source point X₁ (metres) to X₂ = R X₁ + t, R (3, 3) a rotation and
t (3,) in metres.  Everything is batched over a leading dimension B and computed in float64.
"""

from __future__ import annotations

import numpy as np
import torch

from corrnet.constants import MIN_RIGID_MATCHES

from .checks import as_tensor, rotation_problem
from .pose import rotation_angle_deg

KABSCH_WEIGHT_FLOOR = 1e-9
"""Weight added to every match before solving: nothing measurable with weights of order one,
and all-zero weights fall back to the unweighted Kabsch estimate of all matches."""


def weighted_kabsch(
    x1: torch.Tensor, x2: torch.Tensor, weights: torch.Tensor, validate: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rigid transform minimising Σᵢ wᵢ ‖R x1ᵢ + t − x2ᵢ‖², in closed form.

    Kabsch (1976) / Umeyama (1991) without scale: with weighted centroids c₁, c₂ and
    H = Σ wᵢ (x1ᵢ − c₁)(x2ᵢ − c₂)ᵀ = U S Vᵀ, R = V diag(1, 1, det(V Uᵀ)) Uᵀ (the last factor
    rules out reflections) and t = c₂ − R c₁.  Differentiable (``torch.linalg.svd``'s
    backward; finite where the singular values of H are distinct), float64 with autocast
    disabled.

    Args:
        x1: (B, N, 3) source points.
        x2: (B, N, 3) their matches in the target.
        weights: (B, N) non-negative weights (0 on padded or rejected matches).
        validate: check shapes, finiteness, signs and N >= 3.
    Returns:
        R (B, 3, 3) and t (B, 3), float64.
    """
    if validate:
        x1 = as_tensor("x1", x1, (None, 3), "(B, N, 3)")
        x2 = as_tensor("x2", x2, (None, 3), "(B, N, 3)")
        weights = as_tensor("weights", weights, (None,), "(B, N)")
        if x1.ndim != 3 or x2.shape != x1.shape:
            raise ValueError(
                f"x1, x2: expected equal shapes (B, N, 3), got {tuple(x1.shape)} "
                f"and {tuple(x2.shape)}"
            )
        if weights.shape != x1.shape[:2]:
            raise ValueError(
                f"weights: expected shape {tuple(x1.shape[:2])} (B, N), got {tuple(weights.shape)}"
            )
        if x1.shape[1] < MIN_RIGID_MATCHES:
            raise ValueError(
                f"x1: expected at least {MIN_RIGID_MATCHES} matches, got {x1.shape[1]}"
            )
        if bool((weights < 0).any()):
            raise ValueError("weights: expected non-negative values")
    with torch.autocast(device_type=x1.device.type, enabled=False):
        p, q = x1.double(), x2.double()
        w = weights.double() + KABSCH_WEIGHT_FLOOR
        w = (w / w.sum(-1, keepdim=True)).unsqueeze(-1)  # (B, N, 1), sums to 1
        c1, c2 = (w * p).sum(-2), (w * q).sum(-2)  # (B, 3)
        H = (p - c1.unsqueeze(-2)).transpose(-1, -2) @ (w * (q - c2.unsqueeze(-2)))  # (B, 3, 3)
        U, _, Vh = torch.linalg.svd(H)
        V = Vh.transpose(-1, -2)
        d = torch.linalg.det(V @ U.transpose(-1, -2)).sign()
        D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
        R = V @ D @ U.transpose(-1, -2)
        t = c2 - (R @ c1.unsqueeze(-1)).squeeze(-1)
    return R, t


def transform_points(R: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """R x + t for points x (B, N, 3), R (B, 3, 3), t (B, 3) -> (B, N, 3)."""
    return x @ R.transpose(-1, -2) + t.unsqueeze(-2)


def rotation_error_deg(R_hat: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between R̂ and R in degrees (float64; NaN for a NaN estimate), the
    rotation error of :func:`corrnet.geometry.pose_errors`.  (..., 3, 3) x2 -> (...,)."""
    return rotation_angle_deg(R_hat.double(), R.double())


def translation_error(t_hat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """‖t̂ − t‖ in the units of t (metres).  (..., 3) x2 -> (...,)."""
    return (t_hat.double() - t.double()).norm(dim=-1)


def rigid_problem(T: np.ndarray) -> str | None:
    """None when T (4, 4) is a rigid transform (rotation block, finite translation, last row
    [0, 0, 0, 1]), else what is wrong with it."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        return f"expected a 4x4 rigid transform, got shape {T.shape}"
    if not np.isfinite(T).all():
        return "expected finite values, got NaN or inf"
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        return f"expected the last row [0, 0, 0, 1], got {T[3].tolist()}"
    problem = rotation_problem(T[:3, :3])
    return None if problem is None else f"rotation block: {problem}"


RECALL_ROTATION_DEG = 15.0
RECALL_TRANSLATION_M = 0.3
"""A registration succeeds when its rotation error is below 15° and its translation error
below 30 cm: the 3DMatch protocol that PointDSC reports (Bai et al., CVPR 2021, Sec. 5.1)."""


def registration_errors(
    R_hat: torch.Tensor, t_hat: torch.Tensor, R: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotation error (degrees), translation error (metres) and success (bool) of estimates
    R̂ (..., 3, 3), t̂ (..., 3) against the ground truth, each (...,)."""
    err_R, err_t = rotation_error_deg(R_hat, R), translation_error(t_hat, t)
    return err_R, err_t, (err_R < RECALL_ROTATION_DEG) & (err_t < RECALL_TRANSLATION_M)
