"""Epipolar primitives: skew matrices, essential matrices and point-to-line distances.

All coordinates are *normalised* camera coordinates, kp_n = (kp - c) / f, so that the
essential matrix E satisfies x2ᵀ E x1 = 0 for homogeneous x = (x, y, 1).
"""

from __future__ import annotations

import torch

from .checks import as_tensor

INLIER_THRESHOLD = 1e-4
"""OANet's label threshold on the symmetric epipolar distance (``obj_geod_th``)."""


def skew(v: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """Cross-product matrix [v]ₓ with [v]ₓ u = v × u.  (..., 3) -> (..., 3, 3).

    ``validate``: check the shape and finiteness (off in hot loops).
    """
    if validate:
        v = as_tensor("v", v, (3,), "(..., 3)")
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).unflatten(-1, (3, 3))


def essential_from_pose(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E = [t]ₓ R for the motion X₂ = R X₁ + t.  R (..., 3, 3), t (..., 3) -> (..., 3, 3)."""
    R = as_tensor("R", R, (3, 3), "(..., 3, 3)")
    t = as_tensor("t", t, (3,), "(..., 3)")
    return skew(t) @ R


def normalize_keypoints(kp: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pixel keypoints to normalised coordinates, (kp - [cx, cy]) / [fx, fy].

    kp (..., N, 2) pixels, K (..., 3, 3) intrinsics without skew -> (..., N, 2).
    """
    kp = as_tensor("kp", kp, (None, 2), "(..., N, 2)")
    K = as_tensor("K", K, (3, 3), "(..., 3, 3)")
    f = torch.stack([K[..., 0, 0], K[..., 1, 1]], dim=-1).unsqueeze(-2)
    c = torch.stack([K[..., 0, 2], K[..., 1, 2]], dim=-1).unsqueeze(-2)
    return (kp - c) / f


def epipolar_terms(
    x: torch.Tensor, E: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Algebraic residual r = x2ᵀE x1 and the first two entries (a0, a1) of E x1 and (b0, b1)
    of Eᵀ x2, the normals of the epipolar lines in images 2 and 1; no input checks.

    x (..., N, 4) [x1, y1, x2, y2], E (..., 3, 3), batch dimensions broadcast, any float
    dtype -> r, (a0, a1), (b0, b1), each (..., N).  Written out entry by entry (about twice
    as fast as matmuls).
    """
    x1, y1, x2, y2 = x.unbind(-1)
    e = E.flatten(-2).unsqueeze(-1).unbind(-2)  # nine (..., 1)
    a0, a1 = e[0] * x1 + e[1] * y1 + e[2], e[3] * x1 + e[4] * y1 + e[5]  # E x1
    b0, b1 = e[0] * x2 + e[3] * y2 + e[6], e[1] * x2 + e[4] * y2 + e[7]  # Eᵀ x2
    r = x2 * a0 + y2 * a1 + (e[6] * x1 + e[7] * y1 + e[8])
    return r, (a0, a1), (b0, b1)


def _check_pair(x: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = as_tensor("x", x, (None, 4), "(..., N, 4) as [x1, y1, x2, y2]")
    E = as_tensor("E", E, (3, 3), "(..., 3, 3)")
    return x, E.to(x.dtype)


def symmetric_epipolar_distance(
    x: torch.Tensor, E: torch.Tensor, eps: float = 1e-15, validate: bool = True
) -> torch.Tensor:
    """OANet's label: the sum of the squared distances of each point to its epipolar line.

    d = (x2ᵀE x1)² · (1 / |(E x1)₁₂|² + 1 / |(Eᵀ x2)₁₂|²), in squared normalised units;
    a match is an inlier when d < 1e-4 (:data:`INLIER_THRESHOLD`).

    Args:
        x: (..., N, 4) matches [x1, y1, x2, y2] in normalised coordinates.
        E: (..., 3, 3) essential matrix (its scale cancels).
        validate: check shapes and finiteness (off on the training hot path).
    Returns:
        (..., N) distances.
    """
    if validate:
        x, E = _check_pair(x, E)
    r, (a0, a1), (b0, b1) = epipolar_terms(x, E)
    return r.square() * (1.0 / (a0 * a0 + a1 * a1 + eps) + 1.0 / (b0 * b0 + b1 * b1 + eps))


def sampson_distance(x: torch.Tensor, E: torch.Tensor, eps: float = 1e-15) -> torch.Tensor:
    """First-order geometric error (x2ᵀE x1)² / (|E x1|₁₂² + |Eᵀ x2|₁₂²).

    x (..., N, 4), E (..., 3, 3) -> (..., N) in squared normalised units.
    """
    x, E = _check_pair(x, E)
    r, (a0, a1), (b0, b1) = epipolar_terms(x, E)
    return r.square() / ((a0 * a0 + a1 * a1) + (b0 * b0 + b1 * b1) + eps)


def pixel_sampson_distance(
    x: torch.Tensor, E: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor
) -> torch.Tensor:
    """Sampson error in pixels, squared: :func:`sampson_distance` of the pixel matches
    (K1 x1, K2 x2) under the fundamental matrix F = K2⁻ᵀ E K1⁻¹, the error PoseLib thresholds.

    x (..., N, 4) normalised, E (..., 3, 3), K1, K2 (..., 3, 3) pixel intrinsics without skew
    -> (..., N) in squared pixels.
    """
    K1 = as_tensor("K1", K1, (3, 3), "(..., 3, 3)").to(x.dtype)
    K2 = as_tensor("K2", K2, (3, 3), "(..., 3, 3)").to(x.dtype)
    to_px = lambda xy, K: xy @ K[..., :2, :2].transpose(-1, -2) + K[..., None, :2, 2]
    F = torch.linalg.inv(K2).transpose(-1, -2) @ E.to(x.dtype) @ torch.linalg.inv(K1)
    return sampson_distance(torch.cat([to_px(x[..., :2], K1), to_px(x[..., 2:], K2)], -1), F)
