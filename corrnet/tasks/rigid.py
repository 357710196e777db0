"""3-D registration: matches (x1, y1, z1, x2, y2, z2) in metres, each point in its own cloud's
frame.

The network sees them normalised per pair (each cloud centred on the mean of its matched
points, both divided by one common scale, the root mean square distance of the matched points
to their centroids), so a pair's size and position do not matter; the head is the weighted
Kabsch transform ``R`` (B, 3, 3), ``t`` (B, 3) metres (X₂ = R X₁ + t, float64) on the raw
coordinates, trained with a clamped loss on the moved source points.  Validation scores the
registration recall (RR); the data are files of ``corrnet prepare3d`` or the synthetic 3-D
generator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corrnet.constants import REGISTRATION_METHODS, REGISTRATION_NETWORK_METHODS

from .base import Task

if TYPE_CHECKING:
    import argparse

    import numpy as np
    import torch
    from torch.utils.data import Dataset

    from corrnet.eval.evaluate import Predictor
    from corrnet.eval.registration import RegEvalResult
    from corrnet.models.loss import CorrNetLoss


def transform_loss(
    R_hat: torch.Tensor,
    t_hat: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    points: torch.Tensor,
    mask: torch.Tensor | None,
    clamp: float,
) -> torch.Tensor:
    """Mean over the source points (B, N, 3) of min(‖R̂ p + t̂ − (R p + t)‖, clamp), metres.

    The points are the real matches' source points (``mask`` (B, N) bool or None), so the
    loss weighs the transform where the source cloud is.  Float64 inside; scalar float32.
    """
    import torch

    from corrnet.geometry.rigid import transform_points

    p = points.double()
    err = (
        (
            transform_points(R_hat.double(), t_hat.double(), p)
            - transform_points(R.double(), t.double(), p)
        )
        .norm(dim=-1)
        .clamp(max=clamp)
    )
    m = torch.ones_like(err) if mask is None else mask.double()
    return ((err * m).sum(-1) / m.sum(-1).clamp_min(1)).mean().float()


class Rigid(Task):
    """3-D matches; R, t by the weighted Kabsch (float64 out)."""

    name = "rigid"
    label = "3-D registration"
    pairs = "3-D pairs"
    coords = 6
    main_metric = "RR"
    methods = REGISTRATION_METHODS
    network_methods = REGISTRATION_NETWORK_METHODS
    weights = "corrnet-registration.pt"

    @property
    def channels(self) -> tuple[str, ...]:
        """The FPFH matches' ratio and mutual flag."""
        from corrnet.channels import LEGACY_SIDE_INFO

        return LEGACY_SIDE_INFO

    def normalise(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        import torch
        from einops import rearrange

        pts = rearrange(x[..., :6], "b n (c d) -> b n c d", c=2)  # (B, N, 2, 3)
        m = (torch.ones_like(x[..., 0]) if mask is None else mask.to(x.dtype))[..., None, None]
        count = m.sum(1, keepdim=True)
        centred = pts - (pts * m).sum(1, keepdim=True) / count
        scale = (
            ((centred.square().sum(-1, keepdim=True) * m).sum((1, 2), keepdim=True) / (2 * count))
            .sqrt()
            .clamp_min(1e-6)
        )
        return torch.cat([rearrange(centred / scale, "b n c d -> b n (c d)"), x[..., 6:]], -1)

    def estimate(self, coords: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        from corrnet.geometry.rigid import weighted_kabsch

        R, t = weighted_kabsch(coords[..., :3], coords[..., 3:], weights, validate=False)
        return {"R": R, "t": t}

    def geometric_loss(
        self,
        loss: CorrNetLoss,
        out: Mapping[str, Any],
        batch: Mapping[str, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> tuple[str, float, int, torch.Tensor]:
        """:func:`transform_loss` on the source points ``batch["xs"][..., :3]``."""
        value = transform_loss(
            out["R"],
            out["t"],
            batch["R"],
            batch["t"],
            batch["xs"][..., :3],
            mask,
            loss.transform_clamp,
        )
        return "transform", loss.transform_weight, loss.transform_warmup, value

    def validation_scores(
        self, out: Mapping[str, Any], batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept matches and 1.0 where the network's own Kabsch transform registers the
        pair (:func:`corrnet.geometry.rigid.registration_errors`)."""
        from corrnet.eval.predict import kept_matches
        from corrnet.geometry.rigid import registration_errors

        selected = kept_matches(out["logits"], batch.get("mask"))
        return selected, registration_errors(out["R"], out["t"], batch["R"], batch["t"])[2].double()

    def validation_metrics(self, scores: np.ndarray) -> dict[str, float]:
        """The registration recall: the share of registered pairs."""
        return {"RR": float(scores.mean())}

    def recognises(self, path: Path) -> bool:
        """A file of ``corrnet prepare3d`` (its ``corrnet_layout`` attribute)."""
        from corrnet.datasets.pairs3d import is_pairs3d

        return is_pairs3d(path)

    def open_file(self, path: Path, side_info: bool | Sequence[str]) -> Dataset:
        from corrnet.datasets.pairs3d import Pairs3D

        return Pairs3D(path, side_info=side_info)

    def synthetic(
        self,
        length: int,
        seed: int,
        num_matches: int,
        side_info: bool | Sequence[str],
        mode: str,
    ) -> Dataset:
        """The synthetic 3-D generator (one kind of scene: ``mode`` is ignored)."""
        from corrnet.datasets.synthetic3d import Synthetic3DPairs

        return Synthetic3DPairs(
            length=length, seed=seed, num_matches=num_matches, side_info=side_info
        )

    def evaluate(
        self,
        dataset: Dataset,
        predictor: Predictor | None,
        methods: Sequence[str],
        args: argparse.Namespace,
        name: str,
    ) -> RegEvalResult:
        """:func:`corrnet.eval.registration.evaluate_registration`."""
        from corrnet.eval.registration import evaluate_registration

        return evaluate_registration(
            dataset, predictor, methods, progress=not args.quiet, dataset=name
        )

    def render(self, folder: Path, dataset: Dataset, result: RegEvalResult, count: int) -> None:
        from torch.utils.data import Subset

        from corrnet.visualization.registration import render_registration_pairs

        pairs = dataset.dataset if isinstance(dataset, Subset) else dataset  # the Pairs3D
        render_registration_pairs(folder, pairs, result, count)
