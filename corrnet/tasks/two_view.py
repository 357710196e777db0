"""Two-view relative pose: matches (x1, y1, x2, y2) in normalised camera coordinates.

The network sees them as they are; the head is the weighted eight-point essential matrix ``E``
(B, 3, 3), trained with OANet's essential loss on virtual matches.  Validation scores each pair
by the pose error of ``corrnet eval``'s ``corrnet`` method (mAP20); the data are OANet-layout
HDF5 files or the synthetic two-view generator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corrnet.constants import METHODS, NETWORK_METHODS

from .base import Task

if TYPE_CHECKING:
    import argparse

    import numpy as np
    import torch
    from torch.utils.data import Dataset

    from corrnet.eval.evaluate import EvalResult, Predictor
    from corrnet.models.loss import CorrNetLoss

VIZ_METHOD = "corrnet+poselib"
"""Pairs for ``--viz`` are ranked by this method's error (else by the first method evaluated)."""


class TwoView(Task):
    """Two-view matches; E by the weighted eight-point (float32 out)."""

    name = "two_view"
    label = "two-view"
    pairs = "two-view pairs"
    coords = 4
    main_metric = "mAP20"
    methods = METHODS
    network_methods = NETWORK_METHODS
    label_px = True
    has_two_views = True
    weights = "corrnet-real.pt"

    def normalise(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return x

    def estimate(self, coords: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        from corrnet.geometry import weighted_eight_point

        return {"E": weighted_eight_point(coords.float(), weights, validate=False)}

    def swap_views(self, x: torch.Tensor, side_info: bool | Sequence[str]) -> torch.Tensor:
        from corrnet.channels import swap_views

        return swap_views(x, side_info)

    def geometric_loss(
        self,
        loss: CorrNetLoss,
        out: Mapping[str, Any],
        batch: Mapping[str, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> tuple[str, float, int, torch.Tensor]:
        """OANet's essential term (:meth:`CorrNetLoss.essential_loss`)."""
        value = loss.essential_loss(out["E"], batch["R"], batch["t"])
        return "essential", loss.essential_weight, loss.essential_warmup, value

    def validation_scores(
        self, out: Mapping[str, Any], batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept matches and the pose error in degrees of the robust pose without RANSAC
        (:func:`corrnet.eval.predict.predict`)."""
        import torch

        from corrnet.eval.predict import predict
        from corrnet.geometry import pose_errors

        pred = predict(out["logits"], batch["xs"], batch.get("mask"), weights=out["weights"])
        errors = pose_errors(pred.R, pred.t, batch["R"].double(), batch["t"].double())
        return pred.inliers, torch.maximum(*errors)

    def validation_metrics(self, scores: np.ndarray) -> dict[str, float]:
        """OANet's mAP at 5°–20° and the pose AUCs."""
        from corrnet.eval.metrics import oanet_map, pose_auc

        return {**oanet_map(scores), **pose_auc(scores)}

    def recognises(self, path: Path) -> bool:
        """Any HDF5 file without another task's layout: OANet's layout has no marker."""
        from . import TASKS

        return not any(t.recognises(path) for t in TASKS.values() if t is not self)

    def open_file(self, path: Path, side_info: bool | Sequence[str]) -> Dataset:
        from corrnet.datasets.oanet_hdf5 import OANetPairs

        return OANetPairs(path, side_info=side_info)

    def synthetic(
        self,
        length: int,
        seed: int,
        num_matches: int,
        side_info: bool | Sequence[str],
        mode: str,
    ) -> Dataset:
        from corrnet.datasets.synthetic import SyntheticPairs

        return SyntheticPairs(
            length=length, seed=seed, num_matches=num_matches, side_info=side_info, mode=mode
        )

    def evaluate(
        self,
        dataset: Dataset,
        predictor: Predictor | None,
        methods: Sequence[str],
        args: argparse.Namespace,
        name: str,
    ) -> EvalResult:
        """:func:`corrnet.eval.evaluate.evaluate` with ``args``' estimators, workers and batch
        size, after checking that the data have what the methods need."""
        from corrnet.eval.evaluate import check_inputs, evaluate

        check_inputs(dataset, methods, args.estimators)
        return evaluate(
            dataset,
            predictor,
            methods,
            workers=args.workers,
            progress=not args.quiet,
            dataset=name,
            estimators=args.estimators,
            batch_size=args.batch_size,
        )

    def render(self, folder: Path, dataset: Dataset, result: EvalResult, count: int) -> None:
        """Pairs ranked by :data:`VIZ_METHOD`'s pose error, the matches it kept drawn."""
        from corrnet.visualization import render_pair

        method = VIZ_METHOD if VIZ_METHOD in result.methods else result.methods[0]
        rows = sorted(result.of(method), key=lambda r: r.err)
        for kind, chosen in (("worst", rows[::-1][:count]), ("best", rows[:count])):
            for rank, r in enumerate(chosen, 1):
                sample = dataset[r.position]
                image = {key: sample.get(key) for key in ("image1", "image2")}
                render_pair(
                    folder / f"{kind}-{rank:02d}-pair{r.index}.png",  # creates the folder
                    sample["xs"].numpy(),
                    sample["labels"].numpy() > 0.5,
                    r.selected,
                    title=f"{method}, pair {r.index} ({kind} {rank})",
                    pose_error_deg=r.err,
                    K1=sample["K1"].numpy(),
                    K2=sample["K2"].numpy(),
                    **image,
                )
