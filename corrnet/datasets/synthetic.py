"""Synthetic two-view problems that resemble SIFT matches on real image pairs.

A pair is 3-D points in the frustum of camera 1 seen by camera 2 with realistic intrinsics
(640x480 to 1024x768, f = 0.8-1.2 x width).  ``outdoor`` (YFCC-like): far scene, wide
sideways baseline, two different cameras.  ``indoor`` (SUN3D-like): near scene, mostly
forward motion, one camera.  The scene is piecewise planar (2-6 planes over a Voronoi
partition of image 1, plus 15 % clutter at random depths) and half of the keypoints lie in
texture blobs, so neighbouring inliers move alike as in real images.  Inliers are
projections with 0.5-1.5 px Gaussian noise; the inlier ratio is log-uniform (1-40 % indoor,
3-70 % outdoor).  Outliers are uniform random pairs, near misses (true match displaced
10-60 px), matches consistent with a wrong motion, and repeated structure (true match
shifted by one vector per pair).  As in unfiltered SIFT nearest neighbours, 20-50 % of the
matches repeat another match's image-2 point: true ones from (almost) the same image-1
point (copies per orientation, neighbouring scales), outliers from anywhere ("hub" points
of image 2, on which the uniform outliers land too).  Ratios and mutual flags are drawn per
kind with the spread measured on real pairs (``benchmarks/data_stats.py``).  Labels come from
the real symmetric epipolar distance, so a near miss may be an inlier.

What SIFT measures per match (``sizes``, ``angles``, ``dists``; docs/channels.md) comes from a
random stream of its own, so the matches above are the same with or without it.  True matches
(and repeated structure, which looks like its true match) change scale and orientation as the
local affine map of their plane's homography does (:func:`local_similarity`), with SIFT's
noise; the other outliers' scale ratio and orientation difference, the keypoint sizes and the
second-nearest descriptor distance are drawn from quantiles measured on unposed real photos
(``benchmarks/sift_stats.py``); the nearest distance is the ratio times the second.

Every pair is determined by (seed, index) through ``np.random.default_rng([seed, index])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from corrnet.constants import MIN_MATCHES, MODES

from .oanet_hdf5 import write_oanet_hdf5
from .sample import episym, intrinsics, make_sample, normalized_matches

IMAGE_SIZES = ((640, 480), (800, 600), (1024, 768), (1024, 683))
INLIER_RATIO = {"outdoor": (0.03, 0.70), "indoor": (0.01, 0.40)}
OUTLIER_KINDS = (0.45, 0.25, 0.15, 0.15)
"""Shares of uniform, near-miss, wrong-motion and repeated-structure outliers."""
# Side information per kind (inlier, uniform, near miss, wrong motion, repeated), fitted to the
# quantiles of SIFT ratios on real pairs (inliers 0.21 / 0.50 / 0.93 at 10 / 50 / 90 %,
# outliers 0.84 / 0.95 / 0.99) and their mutual-NN rates (86 % and 21 %):
RATIO_BETA = ((1.4, 1.3), (13.0, 1.0), (10.0, 1.0), (10.0, 1.0), (10.0, 1.0))
MUTUAL_P = (0.9, 0.2, 0.3, 0.3, 0.3)
PLANES = (2, 6)
"""Fewest and most planes of the piecewise-planar scene."""
CLUTTER = 0.15
"""Share of points at an independent random depth (off the planes)."""
BLOBS = 0.5
"""Share of keypoints in texture blobs (Gaussian clusters in image 1); the rest uniform."""
SIFT_QUANTILES = (0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)
"""Probabilities of the quantile tables below, measured by ``benchmarks/sift_stats.py`` on
consecutive photos of ../shared/real-train (2 pairs from each of its 20 folders, 2000 SIFT
keypoints): "outliers" are matches with ratio > 0.9, "likely inliers" mutual ones with ratio
< 0.6.  A value is drawn by the piecewise-linear inverse of the table (tails cut at 1 / 99 %)."""
SIZE_INLIER = (1.851, 1.979, 2.105, 2.506, 3.323, 5.349, 9.946, 15.725, 47.040)
"""Keypoint size in image 1 (pixels) of true matches (the likely inliers')."""
SIZE_OUTLIER = (1.818, 1.883, 1.949, 2.173, 2.777, 4.183, 7.122, 10.849, 27.968)
"""Keypoint size in image 1 (pixels) of outliers."""
LOG_SCALE_OUTLIER = (-2.208, -1.242, -0.812, -0.303, 0.002, 0.317, 0.819, 1.210, 2.113)
"""log(size2 / size1) of outliers."""
TURN_OUTLIER = (-178.15, -167.82, -146.86, -75.80, 0.53, 76.53, 145.79, 166.96, 178.16)
"""angle2 - angle1 of outliers, degrees in [-180, 180)."""
SECOND_DISTANCE = (68.07, 132.86, 174.47, 238.75, 294.91, 333.33, 358.10, 371.05, 394.05)
"""Second-nearest descriptor distance (all matches: it hardly differs between inliers and
outliers)."""
LOG_SCALE_NOISE = 0.033
"""SIFT's noise of log(size2 / size1) on true matches: the robust spread around the closed form
of photos warped by known homographies (``benchmarks/sift_stats.py``)."""
ANGLE_NOISE = 2.6
"""SIFT's noise of angle2 - angle1 (degrees) on true matches, measured likewise."""
SATELLITES = (0.2, 0.5)
"""Range of the share of matches that repeat another match's image-2 point."""
EXACT_COPY = 0.35
"""Share of the satellites of true matches that repeat its image-1 point exactly too."""
HUBS = (0.2, 0.5)
"""Range of the number of image-2 hub points over the number of uniform outliers."""


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (3,) by ``angle`` radians (Rodrigues)."""
    k = axis / np.linalg.norm(axis)
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def _random_rotation(rng: np.random.Generator, min_deg: float, max_deg: float) -> np.ndarray:
    """Rotation (3, 3) about a random axis by an angle uniform in [min_deg, max_deg] degrees."""
    return rotation(rng.normal(size=3), np.deg2rad(rng.uniform(min_deg, max_deg)))


def _check_args(mode: str, num_matches: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if num_matches < MIN_MATCHES:
        raise ValueError(f"num_matches: expected at least {MIN_MATCHES}, got {num_matches}")


def _look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-to-camera rotation of a camera at ``centre`` looking at ``target`` (y down)."""
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def _camera(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random intrinsics (3, 3) and image size [w, h] (landscape or portrait)."""
    w, h = IMAGE_SIZES[rng.integers(len(IMAGE_SIZES))]
    if rng.random() < 0.2:
        w, h = h, w
    f = rng.uniform(0.8, 1.2) * w
    K = intrinsics(
        f,
        f * (1 + rng.normal(0, 2e-3)),
        (w - 1) / 2 + rng.normal(0, 5),
        (h - 1) / 2 + rng.normal(0, 5),
    )
    return K, np.array([w, h], np.float64)


def _project(K: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Pixels (n, 2) of camera-frame points X (n, 3)."""
    p = X @ K.T
    return p[:, :2] / p[:, 2:]


def _inside(uv: np.ndarray, size: np.ndarray) -> np.ndarray:
    return (uv >= 0).all(1) & (uv <= size - 1).all(1)


def _scene(rng: np.random.Generator, mode: str):
    """Cameras, relative motion X₂ = R X₁ + t (t in scene units) and depth range."""
    K1, size1 = _camera(rng)
    if mode == "outdoor":
        near, far = rng.uniform(5, 20), rng.uniform(40, 150)
        K2, size2 = _camera(rng)
        mid = np.sqrt(near * far)
        direction = np.array(
            [rng.choice([-1, 1]) * rng.uniform(0.5, 1), rng.normal(0, 0.2), rng.normal(0, 0.4)]
        )
        centre = direction / np.linalg.norm(direction) * mid * rng.uniform(0.05, 0.35)
        target = np.array([rng.normal(0, 0.1), rng.normal(0, 0.1), 1.0]) * mid
    else:
        near, far = rng.uniform(0.4, 1.2), rng.uniform(2.5, 6)
        K2, size2 = K1, size1
        mid = np.sqrt(near * far)
        direction = np.array([rng.normal(0, 0.3), rng.normal(0, 0.15), 1.0]) * rng.choice(
            [-1, 1], p=[0.2, 0.8]
        )
        centre = direction / np.linalg.norm(direction) * rng.uniform(0.1, 0.5)
        target = centre + np.array([rng.normal(0, 0.25), rng.normal(0, 0.1), 1.0]) * mid
    R = rotation(np.array([0.0, 0.0, 1.0]), np.deg2rad(rng.normal(0, 3))) @ _look_at(centre, target)
    return K1, size1, K2, size2, R, -R @ centre, near, far


def local_affine(H: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """The local affine map (Jacobian) of the homography H (3, 3) or (n, 3, 3) at pixels uv
    (n, 2) -> (n, 2, 2): d(uv2) / d(uv1) of uv2 = π(H [uv1, 1])."""
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    H = np.broadcast_to(np.asarray(H, np.float64), (len(uv), 3, 3))
    h = np.einsum("nij,nj->ni", H, np.c_[uv, np.ones(len(uv))])
    uv2 = h[:, :2] / h[:, 2:]
    return (H[:, :2, :2] - uv2[:, :, None] * H[:, 2:3, :2]) / h[:, 2, None, None]


def local_similarity(H: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale and rotation of the homography H (3, 3) or (n, 3, 3) at pixels uv (n, 2), as SIFT
    sees them: scale sqrt|det A| (size2 / size1) and turn atan2(A10 - A01, A00 + A11) in degrees
    (angle2 - angle1 of ``cv2.KeyPoint.angle``, y down) of the local affine map A -> (n,), (n,)."""
    A = local_affine(H, uv)
    scale = np.sqrt(np.abs(np.linalg.det(A)))
    turn = np.degrees(np.arctan2(A[:, 1, 0] - A[:, 0, 1], A[:, 0, 0] + A[:, 1, 1]))
    return scale, turn


def plane_homography(
    K1: np.ndarray, K2: np.ndarray, R: np.ndarray, t: np.ndarray, q: np.ndarray
) -> np.ndarray:
    """Homographies (n, 3, 3) of image 1 to image 2 induced by planes 1/Z₁ = q · [u, v, 1]
    (q (n, 3): inverse depth affine in the pixels of image 1) under X₂ = R X₁ + t:
    H = K2 (R K1⁻¹ + t qᵀ)."""
    M = R @ np.linalg.inv(K1)
    return K2 @ (M[None] + np.asarray(t, np.float64).reshape(3)[None, :, None] * q[:, None, :])


def _from_quantiles(rng: np.random.Generator, table: tuple[float, ...], n: int) -> np.ndarray:
    """n draws (n,) of the distribution with quantiles ``table`` at :data:`SIFT_QUANTILES`."""
    return np.interp(rng.uniform(SIFT_QUANTILES[0], SIFT_QUANTILES[-1], n), SIFT_QUANTILES, table)


def _sift_measurements(
    rng: np.random.Generator,
    kind: np.ndarray,
    uv1: np.ndarray,
    planes: np.ndarray,
    motion: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ratios: np.ndarray,
    satellites: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What SIFT would have measured for N matches: sizes (N, 2) pixels, angles (N, 2) degrees
    in [0, 360), dists (N, 2) (nearest = ratio x second nearest).

    kind (N,): 0 true, 1-3 outliers, 4 repeated structure (looks like its true match); uv1
    (N, 2) pixels of image 1; planes (N, 3) of the true points (1/Z₁ = q · [u, v, 1]); motion
    (K1, K2, R, t); ratios (N,); satellites (sat (N,) bool, src (S,) their sources, exact (S,)
    copies of a true match's keypoint): a true match's satellite moves like it (an exact copy
    is the same keypoints at another dominant orientation), another's shares its image-2 keypoint.
    """
    n = len(kind)
    sat, src, exact = satellites
    true_src = kind[src] == 0
    geometric = np.isin(kind, (0, 4))
    geometric[sat] = true_src
    plane = planes.copy()
    plane[sat] = planes[src]
    scale, turn = np.ones(n), np.zeros(n)
    H = plane_homography(*motion, plane[geometric])
    scale[geometric], turn[geometric] = local_similarity(H, uv1[geometric])
    size1 = np.where(
        geometric, _from_quantiles(rng, SIZE_INLIER, n), _from_quantiles(rng, SIZE_OUTLIER, n)
    )
    size2 = size1 * np.where(
        geometric,
        scale * np.exp(rng.normal(0, LOG_SCALE_NOISE, n)),
        np.exp(_from_quantiles(rng, LOG_SCALE_OUTLIER, n)),
    )
    angle1 = rng.uniform(0, 360, n)
    angle2 = angle1 + np.where(
        geometric, turn + rng.normal(0, ANGLE_NOISE, n), _from_quantiles(rng, TURN_OUTLIER, n)
    )
    copies, hubs = np.flatnonzero(sat)[exact], np.flatnonzero(sat)[~true_src]
    spin = rng.uniform(0, 360, len(copies))
    size1[copies], size2[copies] = size1[src[exact]], size2[src[exact]]
    angle1[copies], angle2[copies] = angle1[src[exact]] + spin, angle2[src[exact]] + spin
    size2[hubs], angle2[hubs] = size2[src[~true_src]], angle2[src[~true_src]]
    second = _from_quantiles(rng, SECOND_DISTANCE, n)
    return (
        np.c_[size1, size2],
        np.c_[angle1, angle2] % 360.0,
        np.c_[ratios * second, second],
    )


def _planes(rng: np.random.Generator, size: np.ndarray, near: float, far: float):
    """A piecewise-planar depth map of image 1: a function (m, 2) pixels -> (m,) depths and the
    planes (m, 3) q of the points, 1/depth = q · [u, v, 1] (constant where clipped).

    Each Voronoi cell of 2-6 random sites is a plane, 1/depth affine in the pixel coordinates.
    """
    k = int(rng.integers(PLANES[0], PLANES[1] + 1))
    sites = rng.uniform(0, 1, (k, 2)) * (size - 1)
    inv = np.exp(rng.uniform(np.log(1 / far), np.log(1 / near), k))
    slope = rng.normal(0, 0.4, (k, 2)) * inv[:, None]

    def depth(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cell = ((sites**2).sum(1)[None] - 2 * uv @ sites.T).argmin(
            1
        )  # nearest site (|uv|² is common)
        gradient = slope[cell] / (size - 1)  # d(1/depth) / d(uv)
        q = np.c_[gradient, inv[cell] - (slope[cell] * 0.5).sum(1)]
        inverse = inv[cell] + (slope[cell] * (uv / (size - 1) - 0.5)).sum(1)
        d = np.clip(1 / np.maximum(inverse, 1 / far), near, far)
        clipped = (
            np.abs(d * inverse - 1) > 1e-9
        )  # the plane's depth left [near, far]: constant there
        q[clipped] = np.c_[np.zeros((int(clipped.sum()), 2)), 1 / d[clipped]]
        return d, q

    return depth


def _keypoints(rng: np.random.Generator, m: int, size: np.ndarray) -> np.ndarray:
    """m pixels of image 1, a share BLOBS of them in 5-30 Gaussian texture blobs."""
    uv = rng.uniform(0, 1, (m, 2)) * (size - 1)
    blob = rng.random(m) < BLOBS
    centres = rng.uniform(0, 1, (int(rng.integers(5, 31)), 2)) * (size - 1)
    which = rng.integers(len(centres), size=int(blob.sum()))
    spread = rng.uniform(0.01, 0.06, len(centres))[which, None] * size.max()
    uv[blob] = centres[which] + rng.normal(0, 1, (int(blob.sum()), 2)) * spread
    return np.clip(uv, 0, size - 1)


SCENE_ATTEMPTS = 20
"""Scenes drawn for one pair until the two cameras share enough points (the first almost always)."""


def _visible_points(rng: np.random.Generator, n: int, K1, size1, K2, size2, R, t, near, far):
    """n points seen by both cameras: pixels uv1, uv2 (n, 2), camera-1 coordinates (n, 3) and
    the local planes q (n, 3) of the points, 1/Z₁ = q · [u, v, 1] (clutter: fronto-parallel);
    None when the cameras hardly overlap."""
    found: list[np.ndarray] = []
    planes: list[np.ndarray] = []
    total = 0
    plane_depth = _planes(rng, size1, near, far)
    for _ in range(50):
        m = 2 * n + 256
        uv = _keypoints(rng, m, size1)
        depth, q = plane_depth(uv)
        clutter = rng.random(m) < CLUTTER
        depth[clutter] = np.exp(rng.uniform(np.log(near), np.log(far), int(clutter.sum())))
        q[clutter] = np.c_[np.zeros((int(clutter.sum()), 2)), 1 / depth[clutter]]
        X1 = np.concatenate([uv, np.ones((m, 1))], 1) @ np.linalg.inv(K1).T * depth[:, None]
        X2 = X1 @ R.T + t
        ok = X2[:, 2] > 1e-3 * near
        ok[ok] = _inside(_project(K2, X2[ok]), size2)
        found.append(X1[ok])
        planes.append(q[ok])
        total += int(ok.sum())
        if total >= n:
            X1 = np.concatenate(found)[:n]
            return _project(K1, X1), _project(K2, X1 @ R.T + t), X1, np.concatenate(planes)[:n]
    return None


def generate_pair(
    seed: int,
    index: int,
    mode: str = "mixed",
    num_matches: int = 2000,
    side_info: bool | Sequence[str] = False,
) -> dict[str, torch.Tensor]:
    """One synthetic pair as a corrnet sample dictionary (N = ``num_matches``)."""
    _check_args(mode, num_matches)
    rng = np.random.default_rng([seed, index])
    if mode == "mixed":
        mode = MODES[rng.integers(2)]
    for _ in range(SCENE_ATTEMPTS):  # a rare scene whose cameras hardly overlap is drawn again
        K1, size1, K2, size2, R, t, near, far = _scene(rng, mode)
        lo, hi = INLIER_RATIO[mode]
        n_in = max(
            MIN_MATCHES, int(round(np.exp(rng.uniform(np.log(lo), np.log(hi))) * num_matches))
        )
        kind = np.concatenate(
            [np.zeros(n_in, int), 1 + rng.choice(4, num_matches - n_in, p=OUTLIER_KINDS)]
        )
        points = _visible_points(rng, num_matches, K1, size1, K2, size2, R, t, near, far)
        if points is not None:
            break
    else:
        raise RuntimeError(
            f"synthetic pair ({seed}, {index}): no overlapping scene in {SCENE_ATTEMPTS} draws"
        )
    uv1, uv2, X1, planes = points
    sigma = rng.uniform(0.5, 1.5)
    uv1 = uv1 + rng.normal(0, sigma, uv1.shape)
    uv2 = uv2 + rng.normal(0, sigma, uv2.shape)
    # uniform random matches
    uniform = kind == 1  # a detected keypoint of image 1 matched anywhere in image 2
    uv2[uniform] = rng.uniform(0, 1, (uniform.sum(), 2)) * (size2 - 1)
    # near misses
    near_miss = kind == 2
    angle = rng.uniform(0, 2 * np.pi, near_miss.sum())
    uv2[near_miss] += rng.uniform(10, 60, near_miss.sum())[:, None] * np.stack(
        [np.cos(angle), np.sin(angle)], 1
    )
    # a wrong motion: the true points seen by a perturbed second camera
    wrong = kind == 3
    R_w = _random_rotation(rng, 0, 15) @ R
    t_w = _random_rotation(rng, 20, 60) @ t
    X2w = X1[wrong] @ R_w.T + t_w
    front = X2w[:, 2] > 0
    uv_wrong = np.full((len(X2w), 2), -1.0)  # behind camera 2: outside, replaced below
    uv_wrong[front] = _project(K2, X2w[front])
    uv2[wrong] = uv_wrong
    # repeated structure: the true match shifted by one vector
    repeated = kind == 4
    shift_angle = rng.uniform(0, 2 * np.pi)
    uv2[repeated] += rng.uniform(40, 150) * np.array([np.cos(shift_angle), np.sin(shift_angle)])
    # outliers that left image 2 become uniform random ones (noisy inliers are only clipped)
    out = (kind > 0) & ~_inside(uv2, size2)
    uv2[out] = rng.uniform(0, 1, (out.sum(), 2)) * (size2 - 1)
    # uniform outliers end on hubs: image-2 points that are the nearest neighbour of many
    uniform = kind == 1
    if uniform.any():
        hubs = uv2[uniform][: max(1, int(rng.uniform(*HUBS) * uniform.sum()))]
        uv2[uniform] = hubs[rng.integers(len(hubs), size=int(uniform.sum()))]
    uv1 = np.clip(uv1, 0, size1 - 1)
    uv2 = np.clip(uv2, 0, size2 - 1)

    beta = np.array(RATIO_BETA)[kind]
    ratios = rng.beta(beta[:, 0], beta[:, 1])
    mutuals = (rng.random(num_matches) < np.array(MUTUAL_P)[kind]).astype(np.float64)
    # satellites repeat another match's image-2 point: for a true match, from the same image-1
    # point (a second orientation: an exact copy) or a neighbouring scale (0.5-3 px away); for
    # an outlier, from another keypoint of image 1 (a hub)
    sat = rng.random(num_matches) < rng.uniform(*SATELLITES)
    src = rng.choice(np.flatnonzero(~sat), int(sat.sum()))
    true_src = kind[src] == 0
    exact = true_src & (rng.random(len(src)) < EXACT_COPY)
    near = true_src & ~exact
    jitter = rng.normal(0, 1, (len(src), 2)) * rng.uniform(0.5, 3.0)
    uv1[sat] = np.clip(
        np.where(
            true_src[:, None],
            uv1[src] + jitter * near[:, None],
            uv1[rng.integers(num_matches, size=len(src))] + jitter,
        ),
        0,
        size1 - 1,
    )
    uv2[sat] = uv2[src]
    hub_ratio = rng.beta(*RATIO_BETA[1], len(src))
    ratios[sat] = np.where(
        exact,
        ratios[src],
        np.where(near, np.clip(ratios[src] + rng.normal(0, 0.03, len(src)), 0, 1), hub_ratio),
    )
    fresh = rng.random(len(src)) < np.where(true_src, MUTUAL_P[0], MUTUAL_P[1])
    mutuals[sat] = np.where(exact, mutuals[src], fresh)  # copies in image 2 too: may be mutual
    order = rng.permutation(num_matches)
    sizes, angles, dists = _sift_measurements(
        np.random.default_rng([seed, index, 1]),
        kind,
        uv1,
        planes,
        (K1, K2, R, t),
        ratios,
        (sat, src, exact),
    )
    xs = normalized_matches(uv1, uv2, K1, K2)[order]
    t_unit = t / np.linalg.norm(t)
    return make_sample(
        xs,
        episym(xs, R, t_unit),
        R,
        t_unit,
        ratios[order],
        mutuals[order],
        K1,
        K2,
        index,
        side_info,
        sift={"sizes": sizes[order], "angles": angles[order], "dists": dists[order]},
    )


class SyntheticPairs(Dataset):
    """``length`` synthetic pairs; item i is
    ``generate_pair(seed, i, mode, num_matches, side_info)``."""

    def __init__(
        self,
        length: int,
        seed: int = 0,
        mode: str = "mixed",
        num_matches: int = 2000,
        side_info: bool | Sequence[str] = False,
    ) -> None:
        _check_args(mode, num_matches)
        if length < 0:
            raise ValueError(f"length: expected a non-negative number, got {length}")
        self.length, self.seed, self.mode = length, seed, mode
        self.num_matches, self.side_info = num_matches, side_info

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic pairs")
        return generate_pair(self.seed, index, self.mode, self.num_matches, self.side_info)


def write_synthetic(
    out: str | Path, pairs: int, seed: int = 0, mode: str = "mixed", num_matches: int = 2000
) -> int:
    """Dump ``pairs`` (at least 1) synthetic pairs to ``out`` in OANet's HDF5 layout (atomic)."""
    if pairs < 1:
        raise ValueError(f"pairs: expected at least 1 pair, got {pairs}")
    dataset = SyntheticPairs(pairs, seed, mode, num_matches)
    return write_oanet_hdf5(out, (dataset[i] for i in range(pairs)), total=pairs, desc="synthetic")
