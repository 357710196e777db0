"""Rigid 3-D geometry in torch: weighted Kabsch / Procrustes, transforms, registration errors.

A rigid transform maps a source point X₁ (metres) to X₂ = R X₁ + t, R (3, 3) a rotation and
t (3,) in metres.  Everything is batched over a leading dimension B and computed in float64.
"""

from __future__ import annotations

import numpy as np
import torch

from corrnet.constants import MIN_RIGID_MATCHES

from .checks import as_tensor, rotation_problem
from .eigen import smallest_eigenvector
from .pose import rotation_angle_deg

HORN_SQUARINGS = 48
"""Squarings in :func:`horn_rotation`'s eigensolver: converged (1e-12) for relative gaps of
Horn's eigenvalues above 27.6 / 2⁴⁸ = 1e-13, so points spread 1e-5 of their extent off a line
still give the SVD's rotation; 16 squarings would treat a spread below ~1 % as a line."""

KABSCH_WEIGHT_FLOOR = 1e-9
"""Weight added to every match before solving: nothing measurable with weights of order one,
and all-zero weights fall back to the unweighted Kabsch estimate of all matches."""


def weighted_kabsch(
    x1: torch.Tensor, x2: torch.Tensor, weights: torch.Tensor, validate: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rigid transform minimising Σᵢ wᵢ ‖R x1ᵢ + t − x2ᵢ‖², in closed form.

    With weighted centroids c₁, c₂ and the cross-covariance H = Σ wᵢ (x1ᵢ − c₁)(x2ᵢ − c₂)ᵀ,
    R maximises tr(R H) over rotations and t = c₂ − R c₁.  Where a gradient is needed (an
    input requires grad and grad mode is on) R comes from the SVD H = U S Vᵀ, Kabsch (1976) /
    Umeyama (1991) without scale: R = V diag(1, 1, det(V Uᵀ)) Uᵀ (the last factor rules out
    reflections), differentiable (finite where the singular values of H are distinct).
    Otherwise from :func:`horn_rotation` (the same R within float64 rounding where it is
    unique; no host synchronisation).  Float64 with autocast disabled.

    Degenerate inputs (no unique R): collinear points (all weight on one line) leave the
    rotation about that line free, and both paths return a minimiser; coincident source or
    target points (H = 0 up to rounding) leave R free: a rotation set by the rounding on
    both paths, and R = I where H is exactly 0; t = c₂ − R c₁ in every case.

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
        R = _kabsch_rotation(H) if H.requires_grad else horn_rotation(H)
        t = c2 - (R @ c1.unsqueeze(-1)).squeeze(-1)
    return R, t


def _kabsch_rotation(H: torch.Tensor) -> torch.Tensor:
    """argmax tr(R H) over rotations by the SVD of H (B, 3, 3): (B, 3, 3)."""
    U, _, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    d = torch.linalg.det(V @ U.transpose(-1, -2)).sign()
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    return V @ D @ U.transpose(-1, -2)


def horn_matrix(H: torch.Tensor) -> torch.Tensor:
    """Horn's symmetric, traceless N (..., 4, 4) of a cross-covariance H (..., 3, 3), with
    qᵀ N q = tr(R(q) H) for a unit quaternion q = (w, x, y, z) and its rotation R(q)."""
    (sxx, sxy, sxz), (syx, syy, syz), (szx, szy, szz) = (H[..., i, :].unbind(-1) for i in range(3))
    rows = (
        (sxx + syy + szz, syz - szy, szx - sxz, sxy - syx),
        (syz - szy, sxx - syy - szz, sxy + syx, szx + sxz),
        (szx - sxz, sxy + syx, syy - sxx - szz, syz + szy),
        (sxy - syx, szx + sxz, syz + szy, szz - sxx - syy),
    )
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


def quaternion_to_rotation(q: torch.Tensor) -> torch.Tensor:
    """The rotation (..., 3, 3) of unit quaternions q (..., 4) = (w, x, y, z)."""
    w, x, y, z = q.unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


def horn_rotation(H: torch.Tensor) -> torch.Tensor:
    """argmax tr(R H) over rotations, without a host synchronisation: Horn's closed form.

    Horn, "Closed-form solution of absolute orientation using unit quaternions", JOSA A 4(4),
    1987: the optimal rotation's unit quaternion is the eigenvector of the largest eigenvalue
    of :func:`horn_matrix` N, here the smallest eigenvector of the PSD ‖N‖_F·I − N
    (‖N‖_F = 2‖H‖_F bounds N's eigenvalues) by :func:`~corrnet.geometry.eigen.
    smallest_eigenvector` (``torch.linalg.inv_ex`` and products; no status check, no
    gradient formula).  A rotation by construction, never a reflection.

    With H = U diag(σ₁ ≥ σ₂ ≥ σ₃) Vᵀ and d = sign det(V Uᵀ), N's two largest eigenvalues
    differ by 2(σ₂ + d σ₃), which vanishes exactly where the Kabsch rotation is not unique.
    Gaps below 1e-13 of ‖N‖_F − λ₂(N) (:data:`HORN_SQUARINGS`; points on a line up to
    rounding) count as repeated: the result is then a unit quaternion of that eigenspace, whose cost
    Σ wᵢ ‖R x1ᵢ + t − x2ᵢ‖² exceeds the minimum by at most 4(σ₂ + d σ₃), the rotation about
    the line being the solver's choice.  H = 0 gives the identity (H = 0 up to rounding, a
    rotation that the rounding sets).  NaN in H gives NaN.

    Args:
        H: (..., 3, 3) float64 (or float32) cross-covariance Σ wᵢ (x1ᵢ − c₁)(x2ᵢ − c₂)ᵀ.
    Returns:
        R (..., 3, 3), H's dtype.
    """
    N = horn_matrix(H)
    scale = N.square().sum((-2, -1), keepdim=True).sqrt()
    eye = torch.eye(4, dtype=H.dtype, device=H.device)
    return quaternion_to_rotation(smallest_eigenvector(scale * eye - N, HORN_SQUARINGS))


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
