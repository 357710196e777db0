"""Input validation shared by the public geometry functions."""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(name: str, x: torch.Tensor | np.ndarray, trailing: tuple[int | None, ...],
              expected: str, finite: bool = True) -> torch.Tensor:
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
    if x.ndim < n or any(t is not None and s != t for s, t in zip(x.shape[x.ndim - n:], trailing)):
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or inf (shape {tuple(x.shape)})")
    return x
