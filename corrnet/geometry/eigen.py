"""Smallest eigenvector of a batch of small symmetric positive semi-definite matrices, without
a host synchronisation.

``torch.linalg.eigh`` reads its solver status on the host on CUDA; :func:`smallest_eigenvector`
uses only ``torch.linalg.inv_ex`` (no status check) and matrix products, so it can run inside a
CUDA graph.  It is repeated squaring of the shifted inverse (inverse iteration with 2ᵏ steps in k
products):

* ``A = M / tr(M) + s·I`` with ``s = SHIFT_EPS · eps(dtype)`` (2.2e-12 in float64); its inverse
  has the eigenvectors of M and eigenvalues 1 / (λⱼ / tr(M) + s), largest for the smallest λ.
* ``P ← P²`` ``SQUARINGS`` times, divided by max|P| every fourth time: P^(2ᵏ) is v₀v₀ᵀ up
  to the factor r^(2ᵏ) on the other directions, r = (λ₀ + s·tr) / (λ₁ + s·tr).
* v₀ is P's column with the largest diagonal entry (v₀[j]² ≥ 1/n), normalised.

Accuracy: as ``eigh``'s, ε·λₘₐₓ / (λ₁ − λ₀) on the computed M (both read its lower triangle),
once r^(2ᵏ) is below 1e-12, i.e. for a relative gap (λ₁ − λ₀) / (λ₁ + s·tr) above 27.6 / 2ᵏ
(4.2e-4 with k = 16).  Closer eigenvalues count as repeated: the result is a unit vector of the
span of the eigenvectors whose eigenvalues are that close to λ₀.  Where they differ only by
rounding (δ ~ 1e-16·tr), it is the normalised projection Πeⱼ of the coordinate axis longest
under that span's projector Π, within about 2ᵏ·δ / (λ₀ + s·tr) (measured 7e-11 for a double
λ₀ = 0.01·tr); a rank drop of more than one (λ₀ = λ₁ = 0 up to rounding) gives a unit vector of
the null space that depends on the rounding, as eigh's does.  The sign is :func:`canonical_sign`'s.
"""

from __future__ import annotations

import torch

SQUARINGS = 16
"""Squarings of the shifted inverse: 2¹⁶ inverse-iteration steps, converged (1e-12) for relative
eigenvalue gaps above 4.2e-4."""

SHIFT_EPS = 1e4
"""Shift of M / tr(M) in units of the dtype's machine epsilon: 2.2e-12 in float64, far above
the rounding of a computed PSD matrix's eigenvalues (~1e-15 tr(M)), so A is positive definite
and its inverse finite, and far below the eigenvalue gaps of an eight-point system."""


def canonical_sign(v: torch.Tensor) -> torch.Tensor:
    """``v`` (..., n) times the sign of its entry of largest magnitude (the first of equals)."""
    j = v.abs().argmax(-1, keepdim=True)
    return torch.where(v.gather(-1, j) < 0, -v, v)


def smallest_eigenvector(M: torch.Tensor, squarings: int = SQUARINGS) -> torch.Tensor:
    """Unit eigenvector of the smallest eigenvalue of symmetric PSD matrices, sync-free.

    No autograd formula (use it where no gradient is needed); no input checks (NaN in, NaN
    out).  See the module docstring for the method, its accuracy and repeated eigenvalues.

    Args:
        M: (..., n, n) symmetric positive semi-definite, float32 or float64; only the lower
            triangle is read.
        squarings: k, for 2ᵏ steps of inverse iteration.
    Returns:
        (..., n) unit vectors in ``M``'s dtype, signed by :func:`canonical_sign`.
    Raises:
        ValueError: ``M`` is not a float32 / float64 batch of square matrices.
    """
    if M.ndim < 2 or M.shape[-1] != M.shape[-2] or M.dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"M: expected a float32 or float64 (..., n, n) tensor, got {M.dtype} {tuple(M.shape)}"
        )
    n = M.shape[-1]
    M = torch.tril(M) + torch.tril(M, -1).transpose(-1, -2)
    trace = M.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    shift = SHIFT_EPS * torch.finfo(M.dtype).eps
    eye = torch.eye(n, dtype=M.dtype, device=M.device)
    P, _ = torch.linalg.inv_ex(M / trace.clamp_min(torch.finfo(M.dtype).tiny) + shift * eye)
    for i in range(squarings):
        if i % 4 == 0:  # from max |P| = 1, four squarings stay below n^15 (2e14 for n = 9)
            P = P / P.abs().amax((-2, -1), keepdim=True)
        P = P @ P
    j = P.diagonal(dim1=-2, dim2=-1).argmax(-1)
    v = P.gather(-1, j[..., None, None].expand(*P.shape[:-1], 1)).squeeze(-1)
    return canonical_sign(v / v.norm(dim=-1, keepdim=True))
