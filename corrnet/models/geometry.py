"""What differs between CorrNet's problems: the match coordinates and the geometric head.

* ``two_view``: matches (x1, y1, x2, y2) in normalised camera coordinates, used as they are;
  the head is the weighted eight-point essential matrix ``E`` (B, 3, 3).
* ``rigid``: 3-D matches (x1, y1, z1, x2, y2, z2) in metres, each point in its own cloud's
  frame.  The network sees them normalised per pair (each cloud centred on the mean of its
  matched points, both divided by one common scale, the root mean square distance of the
  matched points to their centroids), so a pair's size and position do not matter; the head
  is the weighted Kabsch transform ``R`` (B, 3, 3), ``t`` (B, 3) metres (X₂ = R X₁ + t,
  float64) on the raw coordinates.

Every block of the network is shared; :class:`CorrNet` asks its :class:`Geometry` for the
number of coordinates, the normalised input and the estimate.
"""

from __future__ import annotations

import torch
from einops import rearrange

from corrnet.geometry import weighted_eight_point
from corrnet.geometry.rigid import transform_points, weighted_kabsch


class Geometry:
    """The interface: ``coords`` leading channels per match are coordinates; the rest
    (side information) passes through :meth:`normalise` unchanged."""

    name: str
    coords: int

    def normalise(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The network's input from the matches x (B, N, C), mask (B, N) bool or None."""
        raise NotImplementedError

    def estimate(self, coords: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """The geometric estimate from raw coordinates (B, K, coords) and weights (B, K)."""
        raise NotImplementedError


class TwoView(Geometry):
    """Two-view matches; E by the weighted eight-point (float32 out)."""

    name, coords = "two_view", 4

    def normalise(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return x

    def estimate(self, coords: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"E": weighted_eight_point(coords.float(), weights, validate=False)}


class Rigid(Geometry):
    """3-D matches; R, t by the weighted Kabsch (float64 out)."""

    name, coords = "rigid", 6

    def normalise(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
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
        R, t = weighted_kabsch(coords[..., :3], coords[..., 3:], weights, validate=False)
        return {"R": R, "t": t}


GEOMETRIES: dict[str, Geometry] = {g.name: g for g in (TwoView(), Rigid())}


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
