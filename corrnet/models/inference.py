"""Fast inference of a network: eval mode, no autograd, optional autocast and ``torch.compile``.

    predict = make_predictor(model, dtype=torch.bfloat16, compile=True)
    out = predict(x, mask)    # x (B, N, C), optional mask (B, N) -> the network's output dictionary

The predictor checks its inputs where they are (:meth:`CorrNet.check_inputs`: on the host
for host tensors, so that an accelerator is never waited on), moves them to the model's
device and runs the forward pass without any host synchronisation
(``CorrNet.forward(..., validate=False)``), so a batch's kernels are queued back to back.

``symmetric=True`` (two-view) also runs the matches with the two images in the other order, in
the same batch, and averages the two logits and weights per match; ``E`` is the weighted
eight-point estimate from the averaged weights (:meth:`Task.swap_views`, one forward pass of
twice the batch).

``compile=True`` wraps the model in ``torch.compile(mode="reduce-overhead")``: on CUDA the
compiled graph is replayed as a CUDA graph (one launch per forward pass), captured once per
input shape (B, N) and mask / no mask, so it pays off for fixed shapes (benchmarks, batches
padded to one N).  ``torch.compile`` fails late (at the first call, when the backend
compiles) or not at all where it is unsupported; either way the predictor warns once and runs
the model eagerly, so callers need no fallback of their own.  ``predictor.compiled`` tells
which path is in use.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Any

import torch
from einops import reduce
from torch import nn
from torch.utils._pytree import tree_map

from corrnet.errors import UserError

AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)
"""Dtypes run under ``torch.autocast``; float32 runs the plain path."""
SYMMETRIC_MEAN = ("logits", "weights")
"""The per-match outputs a symmetric predictor averages over the two image orders."""
COMPILE_DEFAULTS = {"mode": "reduce-overhead", "dynamic": False}
"""``torch.compile`` settings of :func:`make_predictor` with the default (inductor) backend:
CUDA graphs on CUDA, one graph per input shape."""


class InferenceModel:
    """Callable ``model(x, mask)`` under ``torch.inference_mode``, optional autocast and compile.

    It is a predictor in the sense of :func:`corrnet.eval.evaluate` (features -> the output
    dictionary).

    Use :func:`make_predictor` to build one.  Attributes: ``model`` (a
    :class:`~corrnet.models.CorrNet` in eval mode), ``dtype`` (float32, or the autocast dtype),
    ``device`` (the model's), ``validate`` (inputs checked by :meth:`CorrNet.check_inputs`
    before each call), ``compiled`` (True while calls go through the compiled module;
    False from the start without compile, or after a fallback).
    """

    def __init__(
        self,
        model: nn.Module,
        dtype: torch.dtype,
        compiled: Any | None,
        validate: bool = True,
        symmetric: bool = False,
    ) -> None:
        self.model, self.dtype, self._compiled, self.validate = model, dtype, compiled, validate
        self.symmetric = symmetric

    @property
    def compiled(self) -> bool:
        """Whether calls go through the compiled module (False without compile, or after a
        fallback)."""
        return self._compiled is not None

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters, where every call runs."""
        return next(self.model.parameters()).device

    def _autocast(self, device: torch.device) -> torch.autocast | nullcontext:
        if self.dtype not in AUTOCAST_DTYPES:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def _run_compiled(self, x: torch.Tensor, mask: torch.Tensor | None) -> Any:
        """The compiled forward pass; outputs cloned out of the CUDA graph's static buffers
        (the next replay overwrites them)."""
        if x.device.type != "cuda":
            return self._compiled(x, mask, validate=False)
        torch.compiler.cudagraph_mark_step_begin()
        out = self._compiled(x, mask, validate=False)
        return tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, out)

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
        """Run the model on x (B, N, C) with an optional mask (B, N) bool of real matches.

        The inputs are checked where they are (ValueError for bad input; unless ``validate``
        is False), then moved to the model's device; returns its output dictionary, on that
        device.
        """
        if self.validate:
            mask = self.model.check_inputs(x, mask)
        device = self.device
        x = x.to(device, non_blocking=True)
        mask = None if mask is None else mask.to(device, non_blocking=True)
        if not self.symmetric:
            return self._forward(x, mask)
        swapped = self.model.task.swap_views(x, self.model.config.channels)
        out = self._forward(
            torch.cat([x, swapped]), None if mask is None else torch.cat([mask, mask])
        )
        logits, weights = (reduce(out[k], "(v b) n -> b n", "mean", v=2) for k in SYMMETRIC_MEAN)
        with torch.inference_mode():
            estimate = self.model.task.estimate(x[..., : self.model.task.coords], weights)
        return {"logits": logits, "weights": weights, **estimate}

    def _forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> Any:
        device = x.device
        with torch.inference_mode(), self._autocast(device):
            if self._compiled is None:
                return self.model(x, mask, validate=False)
            try:
                return self._run_compiled(x, mask)
            except Exception as err:
                out = self.model(x, mask, validate=False)
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
    validate: bool = True,
    symmetric: bool = False,
    **compile_kwargs: Any,
) -> InferenceModel:
    """An :class:`InferenceModel` of ``model`` (put in eval mode).

    Args:
        model: the network (:class:`~corrnet.models.CorrNet`), on its target device.
        dtype: float32 (plain path) or bfloat16 / float16 (autocast on the model's device).
        compile: wrap the model with ``torch.compile`` (:data:`COMPILE_DEFAULTS` updated
            with ``compile_kwargs``, e.g. ``mode="max-autotune"``; with another ``backend``
            such as ``"aot_eager"`` only ``compile_kwargs``); falls back to eager with a
            ``RuntimeWarning`` where compiling is unsupported or fails.
        validate: check every input (:meth:`CorrNet.check_inputs`, one synchronisation on
            the input's device); False when the caller vouches for them (benchmarks on
            inputs already on an accelerator): shapes are still checked, a mask runs as given.
        symmetric: average the outputs of both image orders (module docstring); the
            predictor then returns ``logits``, ``weights`` (B, N) and the task's estimate only.
            Raises :class:`~corrnet.errors.UserError` for a task without two views.
    """
    if dtype != torch.float32 and dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"dtype: expected float32, bfloat16 or float16, got {dtype}")
    model.eval()
    compiled = None
    if compile:
        if compile_kwargs.get("backend", "inductor") == "inductor":
            compile_kwargs = {**COMPILE_DEFAULTS, **compile_kwargs}
        try:
            compiled = torch.compile(model, **compile_kwargs)
        except RuntimeError as err:  # e.g. dynamo unsupported on this Python
            warnings.warn(
                f"torch.compile unavailable ({err}); running eagerly", RuntimeWarning, stacklevel=2
            )
    if symmetric and not model.task.has_two_views:
        raise UserError(f"symmetric: expected a two-view network, got the task {model.task.name!r}")
    return InferenceModel(model, dtype, compiled, validate, symmetric)
