"""Fast inference of a network: eval mode, no autograd, optional autocast and ``torch.compile``.

    predict = make_predictor(model, dtype=torch.bfloat16, compile=True)
    out = predict(x, mask)    # x (B, N, C), optional mask (B, N) -> the network's output dictionary

``torch.compile`` fails late (at the first call, when the backend compiles) or not at all
where it is unsupported; either way the predictor warns once and runs the model eagerly, so
callers need no fallback of their own.  ``predictor.compiled`` tells which path is in use.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)
"""Dtypes run under ``torch.autocast``; float32 runs the plain path."""


class InferenceModel:
    """Callable ``model(x, mask)`` under ``torch.inference_mode``, optional autocast and compile.

    It is a predictor in the sense of :func:`corrnet.eval.evaluate` (features -> the output
    dictionary).

    Use :func:`make_predictor` to build one.  Attributes: ``model`` (eval mode), ``dtype``
    (float32, or the autocast dtype), ``compiled`` (True while calls go through the compiled
    module; False from the start without compile, or after a fallback).
    """

    def __init__(
        self, model: nn.Module, dtype: torch.dtype, compiled: Callable[..., Any] | None
    ) -> None:
        self.model, self.dtype, self._compiled = model, dtype, compiled

    @property
    def compiled(self) -> bool:
        """Whether calls go through the compiled module (False without compile, or after a
        fallback)."""
        return self._compiled is not None

    def _autocast(self, device: torch.device) -> torch.autocast | nullcontext:
        if self.dtype not in AUTOCAST_DTYPES:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
        """Run the model on x (B, N, C) with an optional mask (B, N) bool of real matches, on
        the model's device; returns its output dictionary."""
        with torch.inference_mode(), self._autocast(x.device):
            if self._compiled is None:
                return self.model(x, mask)
            try:
                return self._compiled(x, mask)
            except Exception as err:
                out = self.model(x, mask)  # a bad input raises here, and compile stays on
                self._compiled = None
                warnings.warn(
                    f"torch.compile failed ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}); running eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return out


def make_predictor(
    model: nn.Module,
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
    **compile_kwargs: Any,
) -> InferenceModel:
    """An :class:`InferenceModel` of ``model`` (put in eval mode).

    Args:
        model: the network, on its target device.
        dtype: float32 (plain path) or bfloat16 / float16 (autocast on the input's device).
        compile: wrap the model with ``torch.compile(model, **compile_kwargs)`` (e.g.
            ``backend="inductor"``, ``mode="max-autotune"``, ``dynamic=True``); falls back
            to eager with a ``RuntimeWarning`` where compiling is unsupported or fails.
    """
    if dtype != torch.float32 and dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"dtype: expected float32, bfloat16 or float16, got {dtype}")
    model.eval()
    compiled = None
    if compile:
        try:
            compiled = torch.compile(model, **compile_kwargs)
        except RuntimeError as err:  # e.g. dynamo unsupported on this Python
            warnings.warn(
                f"torch.compile unavailable ({err}); running eagerly", RuntimeWarning, stacklevel=2
            )
    return InferenceModel(model, dtype, compiled)
