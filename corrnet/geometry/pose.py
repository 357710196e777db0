"""Relative pose from an essential matrix, and OANet's pose errors."""

from __future__ import annotations

import torch

from .checks import as_tensor

DEPTH_LIMIT = 50.0
"""Triangulated points farther than this (in units of the baseline) do not count in the
cheirality test, as in ``cv2.recoverPose``'s default ``distanceThresh``."""

FAILED_ROTATION_DEG = 180.0
FAILED_TRANSLATION_DEG = 90.0


def _decompose(E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two rotations and the translation direction of E.  (B, 3, 3) -> R1, R2, t."""
    U, _, Vh = torch.linalg.svd(E)
    U = U * torch.where(torch.linalg.det(U) < 0, -1.0, 1.0).to(U.dtype)[..., None, None]
    Vh = Vh * torch.where(torch.linalg.det(Vh) < 0, -1.0, 1.0).to(Vh.dtype)[..., None, None]
    W = E.new_tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return U @ W @ Vh, U @ W.T @ Vh, U[..., :, 2]


def _count_in_front(
    R: torch.Tensor, t: torch.Tensor, x: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Matches triangulated in front of both cameras for the motion (R, t).

    Solves z2 x̂2 = z1 R x̂1 + t for the depths in the least-squares sense.
    R (B, 3, 3), t (B, 3), x (B, N, 4), mask (B, N) -> (B,) counts.
    """
    ones = torch.ones_like(x[..., :1])
    a = torch.cat([x[..., :2], ones], -1) @ R.transpose(-1, -2)  # R x̂1, (B, N, 3)
    b = -torch.cat([x[..., 2:], ones], -1)  # -x̂2
    tt = t.unsqueeze(-2)
    aa, ab, bb = (a * a).sum(-1), (a * b).sum(-1), (b * b).sum(-1)
    ra, rb = -(a * tt).sum(-1), -(b * tt).sum(-1)
    det = aa * bb - ab * ab
    safe = det.abs() > 1e-12 * aa * bb
    det = torch.where(safe, det, torch.ones_like(det))
    z1 = (bb * ra - ab * rb) / det
    z2 = (aa * rb - ab * ra) / det
    good = safe & mask & (z1 > 0) & (z2 > 0) & (z1 < DEPTH_LIMIT) & (z2 < DEPTH_LIMIT)
    return good.sum(-1)


def recover_pose(
    E: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotation and unit translation from E by the cheirality test (as ``cv2.recoverPose``).

    Of the four (R, ±t) decompositions, the one that places the most matches in front of
    both cameras wins.

    Args:
        E: (B, 3, 3) essential matrices.
        x: (B, N, 4) matches in normalised coordinates.
        mask: (B, N) matches that take part in the test (default all).
    Returns:
        R (B, 3, 3), t (B, 3) unit, and the number of matches in front (B,).
    """
    E = as_tensor("E", E, (3, 3), "(B, 3, 3)")
    x = as_tensor("x", x, (None, 4), "(B, N, 4)")
    if E.ndim != 3 or x.ndim != 3 or x.shape[0] != E.shape[0]:
        raise ValueError(
            f"E, x: expected (B, 3, 3) and (B, N, 4), got {tuple(E.shape)} and {tuple(x.shape)}"
        )
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    elif mask.shape != x.shape[:2]:
        raise ValueError(f"mask: expected shape {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    dtype = torch.promote_types(E.dtype, torch.float32)
    E, x = E.to(dtype), x.to(dtype)
    R1, R2, t = _decompose(E)
    cands = [(R1, t), (R1, -t), (R2, t), (R2, -t)]
    counts = torch.stack([_count_in_front(R, tc, x, mask.bool()) for R, tc in cands], -1)
    best = counts.argmax(-1)
    Rs = torch.stack([c[0] for c in cands], 1)
    ts = torch.stack([c[1] for c in cands], 1)
    idx = torch.arange(E.shape[0], device=E.device)
    return Rs[idx, best], ts[idx, best], counts[idx, best]


def _angle(sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.atan2(sin, cos))


def rotation_angle_deg(R_est: torch.Tensor, R_gt: torch.Tensor) -> torch.Tensor:
    """Geodesic angle of R_gtᵀ R_est in degrees, by atan2 (accurate near 0° and 180°); NaN
    where an input is.  (..., 3, 3) x2, float64 -> (...,)."""
    Q = R_gt.transpose(-1, -2) @ R_est
    cos_r = (Q.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    vee = torch.stack(
        [Q[..., 2, 1] - Q[..., 1, 2], Q[..., 0, 2] - Q[..., 2, 0], Q[..., 1, 0] - Q[..., 0, 1]], -1
    )
    return _angle(vee.norm(dim=-1) / 2.0, cos_r)


def pose_errors(
    R_est: torch.Tensor, t_est: torch.Tensor, R_gt: torch.Tensor, t_gt: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """OANet's pose errors in degrees, computed in float64.

    Rotation: the angle of R_gtᵀ R_est.  Translation: the angle between the directions,
    ignoring the sign of t (so at most 90°).  A non-finite estimate counts as failed:
    180° and 90°.  The pair's error, as OANet reports it, is the max of the two.

    R_est, R_gt (..., 3, 3); t_est, t_gt (..., 3) -> two (...) tensors.
    """
    R_est = as_tensor("R_est", R_est, (3, 3), "(..., 3, 3)", finite=False).double()
    R_gt = as_tensor("R_gt", R_gt, (3, 3), "(..., 3, 3)").double()
    t_est = as_tensor("t_est", t_est, (3,), "(..., 3)", finite=False).double()
    t_gt = as_tensor("t_gt", t_gt, (3,), "(..., 3)").double()
    err_r = rotation_angle_deg(R_est, R_gt)
    te = t_est / t_est.norm(dim=-1, keepdim=True)
    tg = t_gt / t_gt.norm(dim=-1, keepdim=True)
    err_t = _angle(torch.linalg.cross(te, tg).norm(dim=-1), (te * tg).sum(-1).abs())
    failed = ~(torch.isfinite(R_est).flatten(-2).all(-1) & torch.isfinite(te).all(-1))
    err_r = torch.where(failed | ~torch.isfinite(err_r), FAILED_ROTATION_DEG, err_r)
    err_t = torch.where(failed | ~torch.isfinite(err_t), FAILED_TRANSLATION_DEG, err_t)
    return err_r, err_t
