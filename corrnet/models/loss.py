"""CorrNet's training loss: class-balanced BCE on every stage's logits and graph logits plus
OANet's essential loss.

Weights follow OANet (Zhang et al., "Learning Two-View Correspondences and Geometry Using
Order-Aware Network", ICCV 2019; defaults of its ``core/config.py``): classification weight
1, essential-matrix weight 0.5, switched on after 20k steps (``loss_essential_init_iter``),
geometric distances clamped at 0.1 (``geo_loss_margin``).  As OANet sums the losses of its
iterations, the classification terms of all stages are summed.  The graph logits w that
build each stage's Laplacian get the same balanced BCE (CLNet, Zhao et al., ICCV 2021,
supervises its local consensus scores likewise), so the graph weights a = relu(tanh(w)) mark
likely inliers instead of drifting closed with nothing to train them.
The geometric term is the task's (:meth:`corrnet.tasks.Task.geometric_loss`): for 3-D
registration, instead of the essential term, a loss on the transform, the clamped distance
between the source points moved by the estimate and by the ground truth
(:func:`corrnet.tasks.rigid.transform_loss`).

``label_px`` trains on tighter positives than the file's labels: OANet's threshold (symmetric
epipolar distance < 1e-4 in normalised units) tolerates a number of pixels that grows with the
focal length (docs/network.md#loss), while PoseLib counts inliers in pixels.
With ``label_px`` a positive is a labelled inlier whose Sampson error under the ground-truth pose
is below ``label_px`` pixels; validation and evaluation keep the file's labels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from corrnet.arguments import MAX_THRESHOLD_PX
from corrnet.errors import UserError
from corrnet.geometry import (
    essential_from_pose,
    pixel_sampson_distance,
    symmetric_epipolar_distance,
)
from corrnet.tasks import Task, default_task


def balanced_bce(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Class-balanced binary cross-entropy, OANet style.

    Per pair: ½ · mean BCE over the inliers + ½ · mean BCE over the outliers (a class with no
    member contributes 0); averaged over the batch.
    logits (B, N), labels (B, N) bool, mask (B, N) bool of real matches -> scalar.
    """
    logits = logits.float()
    pos, neg = labels, ~labels
    if mask is not None:
        pos, neg = pos & mask, neg & mask
    bce = F.binary_cross_entropy_with_logits(logits, pos.float(), reduction="none")
    pos_mean = (bce * pos).sum(-1) / pos.sum(-1).clamp_min(1)
    neg_mean = (bce * neg).sum(-1) / neg.sum(-1).clamp_min(1)
    return (0.5 * pos_mean + 0.5 * neg_mean).mean()


def virtual_correspondences(
    R: torch.Tensor,
    t: torch.Tensor,
    grid: int = 10,
    extent: float = 0.5,
    depths: tuple[float, float] = (2.0, 10.0),
    min_depth: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact matches of the GT motion X₂ = R X₁ + t, for the essential-matrix loss.

    OANet's "virtual points" are matches consistent with the ground truth, independent of
    the (mostly wrong) putative matches.  Here: a ``grid`` × ``grid`` lattice over
    [-extent, extent]² in image 1 (normalised coordinates), lifted to depths alternating
    over ``depths`` (a checkerboard, so the points are not coplanar), moved by (R, t) and
    projected into image 2.  Points that land within ``min_depth`` of camera 2's plane are
    masked out.

    R (B, 3, 3), t (B, 3) -> matches (B, grid², 4), valid (B, grid²) bool.
    """
    lin = torch.linspace(-extent, extent, grid, dtype=R.dtype, device=R.device)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    checker = (
        torch.arange(grid, device=R.device)[:, None] + torch.arange(grid, device=R.device)[None]
    ) % 2
    z = torch.where(checker.bool(), depths[1], depths[0]).to(R.dtype)
    X1 = torch.stack([xx * z, yy * z, z], -1).reshape(-1, 3)  # (G, 3)
    X2 = X1 @ R.transpose(-1, -2) + t.unsqueeze(-2)  # (B, G, 3)
    valid = X2[..., 2].abs() > min_depth
    z2 = torch.where(valid, X2[..., 2], torch.ones_like(X2[..., 2]))
    x1 = (X1[:, :2] / X1[:, 2:]).expand(R.shape[0], -1, -1)
    return torch.cat([x1, X2[..., :2] / z2.unsqueeze(-1)], -1), valid


def pixel_positives(batch: dict[str, torch.Tensor], label_px: float | None) -> torch.Tensor:
    """The labelled inliers (``labels`` > 0.5, (..., N)) whose Sampson error under the ground truth
    (``xs`` (..., N, 4) normalised, ``R``, ``t``, ``K1``, ``K2``) is below ``label_px`` pixels;
    every labelled inlier with ``label_px`` None.  (..., N) bool."""
    labels = torch.as_tensor(batch["labels"]) > 0.5
    if label_px is None:
        return labels
    x = torch.as_tensor(batch["xs"]).double()
    E = essential_from_pose(
        torch.as_tensor(batch["R"]).to(x.dtype), torch.as_tensor(batch["t"]).to(x.dtype)
    )
    return labels & (pixel_sampson_distance(x, E, batch["K1"], batch["K2"]) < label_px**2)


class CorrNetLoss(nn.Module):
    """Total loss = Σ_stages (cls_weight · balanced BCE(logits) + graph_weight · balanced
    BCE(graph logits)) + [step >= essential_warmup] · essential_weight ·
    mean(min(d_sym(virtual matches, Ê), essential_clamp)).

    Args:
        cls_weight: weight of the classification terms (OANet: 1).
        graph_weight: weight of the graph-logit classification terms.
        essential_weight: weight of the essential-matrix term (OANet: 0.5).
        essential_warmup: training step from which the essential term counts (OANet: 20000).
        essential_clamp: clamp on the symmetric epipolar distance (OANet: 0.1).
        grid: virtual matches per side, see :func:`virtual_correspondences`.
        label_px: positives only within this Sampson error in pixels (module docstring);
            None: the file's labels.  Only for a task with :attr:`~corrnet.tasks.Task.label_px`
            (two-view).
        task: the network's (:attr:`CorrNetConfig.task`; the training module passes it), which
            picks the geometric term; None: that of the default :class:`CorrNetConfig`.  For
            the rigid task the term is ``transform_weight`` · mean(min(‖R̂p + t̂ − (Rp + t)‖,
            ``transform_clamp``)) over the source points p, in metres, from step
            ``transform_warmup`` on, and the essential settings are unused.
    """

    def __init__(
        self,
        cls_weight: float = 1.0,
        graph_weight: float = 1.0,
        essential_weight: float = 0.5,
        essential_warmup: int = 20000,
        essential_clamp: float = 0.1,
        grid: int = 10,
        label_px: float | None = None,
        task: Task | None = None,
        transform_weight: float = 1.0,
        transform_warmup: int = 0,
        transform_clamp: float = 0.5,
    ) -> None:
        super().__init__()
        task = task or default_task()
        if label_px is not None and not (
            task.label_px and math.isfinite(label_px) and 0 < label_px <= MAX_THRESHOLD_PX
        ):
            expected = (
                f"a positive number of pixels up to {MAX_THRESHOLD_PX:g}, or null"
                if task.label_px
                else "null"
            )
            raise UserError(
                f"model.loss.label_px: expected {expected} for a {task.label} network, "
                f"got {label_px}"
            )
        for name, value, low, strict in [
            ("cls_weight", cls_weight, 0, False),
            ("graph_weight", graph_weight, 0, False),
            ("essential_weight", essential_weight, 0, False),
            ("transform_weight", transform_weight, 0, False),
            ("essential_warmup", essential_warmup, 0, False),
            ("transform_warmup", transform_warmup, 0, False),
            ("essential_clamp", essential_clamp, 0, True),
            ("transform_clamp", transform_clamp, 0, True),
            ("grid", grid, 1, False),
        ]:
            if not (math.isfinite(value) and (value > low if strict else value >= low)):
                raise UserError(
                    f"model.loss.{name}: expected a finite number {'>' if strict else '>='} "
                    f"{low}, got {value}"
                )
        self.task = task
        self.label_px = label_px
        self.transform_weight = transform_weight
        self.transform_warmup = transform_warmup
        self.transform_clamp = transform_clamp
        self.cls_weight = cls_weight
        self.graph_weight = graph_weight
        self.essential_weight = essential_weight
        self.essential_warmup = essential_warmup
        self.essential_clamp = essential_clamp
        self.grid = grid

    def essential_loss(self, E: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Clamped symmetric epipolar distance of GT-consistent virtual matches under Ê.

        E (B, 3, 3) estimate, R (B, 3, 3), t (B, 3) ground truth -> scalar.
        """
        pts, valid = virtual_correspondences(R.to(E.dtype), t.to(E.dtype), self.grid)
        d = symmetric_epipolar_distance(pts, E, validate=False).clamp(max=self.essential_clamp)
        return ((d * valid).sum(-1) / valid.sum(-1).clamp_min(1)).mean()

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The positives the classification terms train on, (B, N) bool: ``labels`` > 0.5, and with
        ``label_px`` also a Sampson error below it under the ground truth (needs ``xs`` (B, N, 4),
        ``R``, ``t``, ``K1``, ``K2``)."""
        return pixel_positives(batch, self.label_px)

    def forward(
        self, out: dict, batch: dict[str, torch.Tensor], step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of the network output ``out`` (see :meth:`CorrNet.forward`) on ``batch``.

        ``batch``: ``labels`` (B, N) float (inlier when > 0.5), ``R`` (B, 3, 3), ``t`` (B, 3),
        optional ``mask`` (B, N) bool of real (not padded) matches.  A stage's terms count
        the matches its ``stage_masks`` entry marks (and ``mask`` too, when the network was
        called without it).
        Returns the total and its parts (``cls_s`` and ``graph_s`` per stage, and the task's
        geometric term: ``essential`` or, rigid, ``transform``), detached.  Rigid: ``batch``
        also has ``xs`` (B, N, 6).
        """
        labels = self.targets(batch)
        mask = batch.get("mask")
        parts: dict[str, torch.Tensor] = {}
        total = out["logits"].new_zeros((), dtype=torch.float32)
        for s, (lg, w, idx, m) in enumerate(
            zip(out["stage_logits"], out["graph_logits"], out["stage_indices"], out["stage_masks"])
        ):
            if mask is not None:
                m = m & mask.bool().gather(1, idx)
            lab = labels.gather(1, idx)
            cls, graph = balanced_bce(lg, lab, m), balanced_bce(w, lab, m)
            parts[f"cls_{s}"], parts[f"graph_{s}"] = cls.detach(), graph.detach()
            total = total + self.cls_weight * cls + self.graph_weight * graph
        name, weight, warmup, geo = self.task.geometric_loss(self, out, batch, mask)
        parts[name] = geo.detach()
        if step >= warmup and weight > 0:
            total = total + weight * geo
        return total, parts
