"""Input validation shared by the public geometry functions."""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(
    name: str,
    x: torch.Tensor | np.ndarray,
    trailing: tuple[int | None, ...],
    expected: str,
    finite: bool = True,
) -> torch.Tensor:
    """Return ``x`` as a floating tensor after checking its trailing dimensions.

    Args:
        name: argument name used in the error message.
        trailing: required sizes of the last dimensions (None accepts any size).
        expected: human readable shape, e.g. ``"(..., N, 2)"``.
        finite: also reject NaN and infinite entries.

    Raises:
        ValueError: naming ``name``, the expected and the actual shape.
    """
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    n = len(trailing)
    if x.ndim < n or any(t is not None and s != t for s, t in zip(x.shape[x.ndim - n :], trailing)):
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or inf (shape {tuple(x.shape)})")
    return x


ROTATION_TOLERANCE = 1e-3
"""Largest entry of |R Rᵀ - I| a ground-truth rotation may have (float32 storage gives ~1e-7)."""


def _not_finite(a: np.ndarray, shape: tuple[int, ...]) -> str | None:
    if a.shape != shape:
        return f"expected shape {shape}, got {a.shape}"
    if not np.isfinite(a).all():
        return "expected finite values, got NaN or inf"
    return None


def rotation_problem(R: np.ndarray, tol: float = ROTATION_TOLERANCE) -> str | None:
    """None when R (3, 3) is a rotation (R Rᵀ = I within ``tol``, det > 0), else what is wrong."""
    R = np.asarray(R, dtype=np.float64)
    problem = _not_finite(R, (3, 3))
    if problem is not None:
        return problem
    deviation, det = float(np.abs(R @ R.T - np.eye(3)).max()), float(np.linalg.det(R))
    if deviation > tol or det <= 0:
        return (
            f"expected a rotation (R Rᵀ = I within {tol:g}, det +1), got max |R Rᵀ - I| = "
            f"{deviation:.3g}, det {det:.3g}"
        )
    return None


def intrinsics_problem(K: np.ndarray) -> str | None:
    """None when K (3, 3) is finite with positive focal lengths K[0, 0], K[1, 1], else why not."""
    K = np.asarray(K, dtype=np.float64)
    problem = _not_finite(K, (3, 3))
    if problem is None and not (K[0, 0] > 0 and K[1, 1] > 0):
        problem = f"expected positive focal lengths, got fx = {K[0, 0]:g}, fy = {K[1, 1]:g}"
    return problem


def translation_problem(t: np.ndarray) -> str | None:
    """None when t (3,) is finite and non-zero, else what is wrong."""
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    problem = _not_finite(t, (3,))
    if problem is None and not np.linalg.norm(t) > 0:
        problem = "expected a non-zero translation"
    return problem
