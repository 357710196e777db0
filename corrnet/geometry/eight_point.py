"""Differentiable weighted eight-point estimate of the essential matrix."""

from __future__ import annotations

import torch

from .checks import as_tensor
from .eigen import canonical_sign, smallest_eigenvector

WEIGHT_FLOOR = 1e-9
"""Weight added to every match before solving.

It changes nothing measurable when the network keeps a few dozen matches with weights of
order one, and it is the documented fallback when fewer than eight weights are positive (or
all are zero): the matches with no weight then vote equally, so the estimate degrades to the
ordinary eight-point on all matches instead of an arbitrary vector of a degenerate null space.
"""

EIGEN_GAP_TOL = 1e-12
"""Relative eigenvalue gap below which a direction is left out of the backward pass."""


class _SmallestEigenvector(torch.autograd.Function):
    """Eigenvector of the smallest eigenvalue of a symmetric matrix, with a safe backward.

    The gradient of v₀ is Σⱼ vⱼ vⱼᵀ dM v₀ / (λ₀ - λⱼ).  ``torch.linalg.eigh`` divides by every
    eigenvalue gap, so a repeated eigenvalue (all-identical matches, fewer than eight
    weighted matches) gives inf or NaN; here terms whose gap is below
    ``EIGEN_GAP_TOL · max|λ|`` are dropped, which is the gradient of the eigenvector the
    forward pass actually returned, restricted to the well-defined directions.  The sign is
    :func:`canonical_sign`'s, as :func:`smallest_eigenvector`'s.
    """

    @staticmethod
    def forward(ctx, M: torch.Tensor) -> torch.Tensor:  # M (B, 9, 9)
        lam, V = torch.linalg.eigh(M)
        v0 = canonical_sign(V[..., 0])
        ctx.save_for_backward(lam, torch.cat([v0.unsqueeze(-1), V[..., 1:]], -1))
        return v0

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        lam, V = ctx.saved_tensors
        gap = lam[..., :1] - lam[..., 1:]  # (B, 8), all <= 0
        tol = EIGEN_GAP_TOL * lam.abs().amax(-1, keepdim=True).clamp_min(1e-300)
        inv_gap = torch.where(gap.abs() > tol, 1.0 / torch.where(gap == 0, 1.0, gap), 0.0)
        coeff = (V[..., 1:] * grad.unsqueeze(-1)).sum(-2) * inv_gap  # (B, 8)
        dv = V[..., 1:] @ coeff.unsqueeze(-1)  # (B, 9, 1)
        G = dv @ V[..., :1].transpose(-1, -2)
        return 0.5 * (G + G.transpose(-1, -2))


def eight_point_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows [x2x1, x2y1, x2, y2x1, y2y1, y2, x1, y1, 1] of the epipolar constraint.

    x (..., N, 4) -> (..., N, 9); row · vec(E) = x2ᵀ E x1 with E flattened row-major.
    """
    x1, y1, x2, y2 = x.unbind(-1)
    one = torch.ones_like(x1)
    return torch.stack([x2 * x1, x2 * y1, x2, y2 * x1, y2 * y1, y2, x1, y1, one], dim=-1)


def weighted_eight_point(
    x: torch.Tensor, weights: torch.Tensor, validate: bool = True, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Essential matrix minimising Σᵢ wᵢ (x2ᵢᵀ E x1ᵢ)² subject to ‖E‖_F = 1.

    E is the eigenvector of XᵀWX with the smallest eigenvalue (OANet's formulation; no
    projection onto the essential manifold, so the result has unit Frobenius norm but not
    necessarily two equal singular values).  Computed in float64 with autocast disabled.
    Where a gradient is needed (``x`` or ``weights`` requires grad and grad mode is on) the
    eigenvector comes from ``torch.linalg.eigh``; otherwise from the sync-free
    :func:`~corrnet.geometry.eigen.smallest_eigenvector` (the same vector within eigh's own
    accuracy, no host synchronisation on CUDA).  Either way E's sign is
    :func:`~corrnet.geometry.eigen.canonical_sign`'s (its largest entry is positive).

    Args:
        x: (B, N, 4) matches [x1, y1, x2, y2], normalised coordinates.
        weights: (B, N) non-negative weights, e.g. relu(tanh(logits)).
        validate: check shapes and finiteness.
        mask: (B, N) bool, the matches that take part (padding False: not even the floor's
            vote); default all.
    Returns:
        (B, 3, 3) essential matrices, float32 unless ``x`` is float64.
    """
    if validate:
        x = as_tensor("x", x, (None, 4), "(B, N, 4)")
        weights = as_tensor("weights", weights, (None,), "(B, N)")
        if x.ndim != 3:
            raise ValueError(f"x: expected shape (B, N, 4), got {tuple(x.shape)}")
        if weights.shape != x.shape[:2]:
            raise ValueError(
                f"weights: expected shape {tuple(x.shape[:2])} (B, N) to match x, "
                f"got {tuple(weights.shape)}"
            )
        if bool((weights < 0).any()):
            raise ValueError("weights: expected non-negative values")
    out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        X = eight_point_rows(x.double())
        w = weights.double() + (WEIGHT_FLOOR if mask is None else WEIGHT_FLOOR * mask.double())
        M = X.transpose(-1, -2) @ (X * w.unsqueeze(-1))  # (B, 9, 9)
        e = _SmallestEigenvector.apply(M) if M.requires_grad else smallest_eigenvector(M)
    return e.reshape(*e.shape[:-1], 3, 3).to(out_dtype)
