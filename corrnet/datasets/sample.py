"""The sample dictionary shared by every corrnet dataset (HDF5 reader, synthetic, prepare).

Keys (N matches; all float32 unless noted):
    xs (N, 4) normalised [x1, y1, x2, y2]; ys (N,) symmetric epipolar distance under the GT
    essential matrix; labels (N,) 1.0 where ys < 1e-4; R (3, 3) relative rotation R_j R_iᵀ;
    t (3,) unit translation; ratios (N,) SIFT ratio d1/d2; mutuals (N,) 0/1 mutual-NN flag;
    K1, K2 (3, 3) absolute intrinsics; index int64 scalar; features (N, 4 + C): the network's
    input, xs and the channels of ``side_info`` (:func:`network_input`); optional image1,
    image2 (str paths); optional sizes, angles, dists (N, 2): what SIFT measured per match
    (keypoint size in pixels and angle in degrees in image 1 and 2, nearest and second-nearest
    descriptor distance; docs/channels.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from corrnet.constants import MIN_MATCHES as MIN_MATCHES

from ..channels import network_input
from ..geometry import (
    INLIER_THRESHOLD,
    essential_from_pose,
    normalize_keypoints,
    symmetric_epipolar_distance,
)

PER_MATCH_KEYS = ("xs", "ys", "labels", "ratios", "mutuals", "features", "sizes", "angles", "dists")
"""Sample keys whose first dimension is the match dimension N."""


def episym(xs: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Symmetric epipolar distance of matches under E = [t]ₓ R, computed in float64.

    xs (N, 4) normalised, R (3, 3), t (3,) -> (N,) float64 in squared normalised units.
    """
    E = essential_from_pose(
        torch.as_tensor(R, dtype=torch.float64), torch.as_tensor(t, dtype=torch.float64).reshape(3)
    )
    return symmetric_epipolar_distance(torch.as_tensor(xs, dtype=torch.float64), E).numpy()


def normalized_matches(
    uv1: np.ndarray, uv2: np.ndarray, K1: np.ndarray, K2: np.ndarray
) -> np.ndarray:
    """Pixel matches to normalised [x1, y1, x2, y2], in float64.

    uv1, uv2 (N, 2) pixels, K1, K2 (3, 3) intrinsics without skew -> xs (N, 4) float64.
    """
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))
    return torch.cat(
        [normalize_keypoints(t(uv1), t(K1)), normalize_keypoints(t(uv2), t(K2))], 1
    ).numpy()


def to_pixels(xy: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Normalised points xy (N, 2) to pixels, K [x, y, 1]ᵀ (the inverse of the normalisation of
    :func:`normalized_matches`); K (3, 3) without skew -> (N, 2) float64."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K: expected intrinsics of shape (3, 3), got {K.shape}")
    return np.asarray(xy, dtype=np.float64) @ K[:2, :2].T + K[:2, 2]


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Absolute pinhole intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] as float64 (3, 3)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def make_sample(
    xs: np.ndarray,
    ys: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    ratios: np.ndarray,
    mutuals: np.ndarray,
    K1: np.ndarray,
    K2: np.ndarray,
    index: int,
    side_info: bool | Sequence[str] = False,
    image1: str | None = None,
    image2: str | None = None,
    sift: Mapping[str, np.ndarray] | None = None,
) -> dict[str, torch.Tensor | str]:
    """Build the sample dictionary (see module docstring) from numpy arrays.

    xs (N, 4), ys (N,), R (3, 3), t (3,) (normalised here), ratios (N,), mutuals (N,),
    K1, K2 (3, 3); ``sift``: optional per-match arrays ``sizes``, ``angles``, ``dists`` (N, 2).
    Labels are ``ys < INLIER_THRESHOLD`` with ys rounded to float32 first.
    """
    as32 = lambda a: torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))
    t = np.asarray(t, dtype=np.float64).reshape(3)
    ys32 = np.asarray(
        ys, dtype=np.float32
    )  # labels from the stored precision: same after a round trip
    sample: dict[str, torch.Tensor | str] = {
        "xs": as32(xs),
        "ys": as32(ys32),
        "labels": as32(ys32.astype(np.float64) < INLIER_THRESHOLD),
        "R": as32(R),
        "t": as32(t / np.linalg.norm(t)),
        "ratios": as32(ratios),
        "mutuals": as32(mutuals),
        "K1": as32(K1),
        "K2": as32(K2),
        "index": torch.tensor(index, dtype=torch.int64),
        **{k: as32(v).reshape(-1, 2) for k, v in (sift or {}).items()},
    }
    sample["features"] = network_input(sample["xs"], sample, side_info)
    if image1 is not None and image2 is not None:
        sample["image1"], sample["image2"] = image1, image2
    return sample
