"""Scene description for one image pair, in plain numpy (no Open3D import).

Two views are described:

* the *pair view*: both images side by side in the plane z = 0 (each scaled to height 1,
  image 1 left of image 2, y pointing up), drawn as textured quads when the images are
  known and as keypoint clouds otherwise, with one line segment per shown correspondence;
* the *embedding view*: the (N, 4) matches embedded in 3-D, one point per match.

Every correspondence gets an outcome against ground truth: TP (kept inlier), FP (kept
outlier), FN (dropped inlier) and TN (dropped outlier).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from corrnet.constants import EMBEDDINGS
from corrnet.errors import UserError
from corrnet.images import read_image

from ..datasets.sample import to_pixels

OUTCOMES: tuple[str, ...] = ("tn", "fn", "fp", "tp")
"""Outcome names, in drawing order (later ones are drawn on top)."""

PALETTE: dict[str, tuple[int, int, int]] = {
    "tp": (0x00, 0x9E, 0x73),  # Okabe–Ito bluish green
    "fp": (0xD5, 0x5E, 0x00),  # Okabe–Ito vermilion
    "fn": (0x56, 0xB4, 0xE9),  # Okabe–Ito sky blue
    "tn": (0xB4, 0xB4, 0xB4),  # light grey
}
"""RGB colour (0-255) of each outcome; colour-blind safe (Okabe–Ito)."""

FRAME_RGB: tuple[int, int, int] = (0x60, 0x60, 0x60)
"""Colour of image frames and embedding axes."""

KEYPOINT_RGB: tuple[int, int, int] = (0xC8, 0xC8, 0xC8)
"""Colour of the keypoint clouds drawn when the images are unknown."""

TWO_VIEW_COLUMNS: tuple[str, ...] = ("x1", "y1", "x2", "y2")
"""Coordinates of a two-view match (normalised image coordinates)."""

PANEL_GAP = 0.06
"""Horizontal gap between the two image panels, in panel heights."""

MAX_TEXTURE_SIDE = 1024
"""Longest texture side in pixels; larger images are downscaled before rendering."""

_Z = {  # depth of each layer above the image panels (z = 0), later ones on top
    "keypoints": 0.001,
    "tn": 0.002,
    "fn": 0.003,
    "fp": 0.004,
    "tp": 0.005,
}


@dataclass(frozen=True)
class PairStats:
    """Confusion counts of a kept set against ground truth, with precision and recall."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def kept(self) -> int:
        """Number of kept (predicted inlier) matches."""
        return self.tp + self.fp

    @property
    def total(self) -> int:
        """Number of putative matches N."""
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        """TP / kept; NaN when nothing is kept."""
        return self.tp / self.kept if self.kept else float("nan")

    @property
    def recall(self) -> float:
        """TP / ground-truth inliers; NaN without inliers."""
        inliers = self.tp + self.fn
        return self.tp / inliers if inliers else float("nan")


@dataclass
class Scene:
    """Plain-array geometry of both views; all coordinates are world units (floats).

    panels: one (4, 3) quad per image, corners top-left, top-right, bottom-right, bottom-left.
    textures: one (h, w, 3) uint8 RGB image per panel, or empty when the images are unknown.
    keypoints: (M, 3) keypoint cloud drawn when there are no textures (M = 2N), else (0, 3).
    lines: outcome -> (L, 2, 3) segment end points, image 1 then image 2.
    points: outcome -> (n, 3) embedded matches.
    pair_bounds: [xmin, xmax, ymin, ymax] of the pair view.
    embed_radius: radius around the origin that the embedding view must show.
    """

    panels: list[np.ndarray]
    textures: list[np.ndarray]
    keypoints: np.ndarray
    lines: dict[str, np.ndarray]
    points: dict[str, np.ndarray]
    pair_bounds: np.ndarray
    embed_radius: float = 1.1

    def save(self, path: Path) -> None:
        """Write the geometry to an .npz file readable by :meth:`load`."""
        arrays: dict[str, np.ndarray] = {
            "keypoints": self.keypoints,
            "pair_bounds": self.pair_bounds,
            "embed_radius": np.asarray(self.embed_radius),
        }
        for i, panel in enumerate(self.panels):
            arrays[f"panel{i}"] = panel
        for i, texture in enumerate(self.textures):
            arrays[f"texture{i}"] = texture
        for name in OUTCOMES:
            arrays[f"lines_{name}"] = self.lines[name]
            arrays[f"points_{name}"] = self.points[name]
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> Scene:
        """Read a scene written by :meth:`save`."""
        with np.load(path) as data:
            return cls(
                panels=[data[f"panel{i}"] for i in range(2)],
                textures=[data[f"texture{i}"] for i in range(2) if f"texture{i}" in data],
                keypoints=data["keypoints"],
                lines={name: data[f"lines_{name}"] for name in OUTCOMES},
                points={name: data[f"points_{name}"] for name in OUTCOMES},
                pair_bounds=data["pair_bounds"],
                embed_radius=float(data["embed_radius"]),
            )


def check_inputs(
    xs: np.ndarray,
    is_inlier_gt: np.ndarray,
    is_kept: np.ndarray,
    columns: Sequence[str] = TWO_VIEW_COLUMNS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert matches (N, C) float, C = len(columns), and the two (N,) boolean
    masks; ``columns`` names the coordinates of a match for the error message."""
    xs = np.asarray(xs, dtype=np.float64)
    if xs.ndim != 2 or xs.shape[1] != len(columns):
        raise ValueError(
            f"xs must have shape (N, {len(columns)}) as [{', '.join(columns)}], got {xs.shape}"
        )
    if not np.isfinite(xs).all():
        raise ValueError("xs contains NaN or infinite coordinates")
    masks = []
    for name, mask in (("is_inlier_gt", is_inlier_gt), ("is_kept", is_kept)):
        mask = np.asarray(mask)
        if mask.shape != (xs.shape[0],):
            raise ValueError(f"{name} must have shape ({xs.shape[0]},), got {mask.shape}")
        if mask.dtype != bool:
            raise ValueError(f"{name} must be a boolean mask, got dtype {mask.dtype}")
        masks.append(mask)
    return xs, masks[0], masks[1]


def outcomes(is_inlier_gt: np.ndarray, is_kept: np.ndarray) -> np.ndarray:
    """Outcome index into :data:`OUTCOMES` per match.  (N,) bool, (N,) bool -> (N,) int."""
    return 2 * is_kept.astype(np.int64) + is_inlier_gt.astype(np.int64)


def pair_stats(is_inlier_gt: np.ndarray, is_kept: np.ndarray) -> PairStats:
    """Confusion counts of the kept set against ground truth."""
    return PairStats(
        tp=int(np.sum(is_kept & is_inlier_gt)),
        fp=int(np.sum(is_kept & ~is_inlier_gt)),
        fn=int(np.sum(~is_kept & is_inlier_gt)),
        tn=int(np.sum(~is_kept & ~is_inlier_gt)),
    )


def fit_essential(xs: np.ndarray) -> np.ndarray:
    """Least-squares essential matrix (eight-point) of matches (M >= 8, 4) -> (3, 3)."""
    if xs.shape[0] < 8:
        raise UserError(f"fitting an essential matrix needs >= 8 matches, got {xs.shape[0]}")
    x1, y1, x2, y2 = xs.T
    ones = np.ones_like(x1)
    rows = np.stack([x2 * x1, x2 * y1, x2, y2 * x1, y2 * y1, y2, x1, y1, ones], axis=1)
    E = np.linalg.svd(rows)[2][-1].reshape(3, 3)
    u, s, vt = np.linalg.svd(E)
    return u @ np.diag([1.0, 1.0, 0.0]) @ vt


def sampson_residual(xs: np.ndarray, E: np.ndarray) -> np.ndarray:
    """Signed Sampson residual x2ᵀE x1 / ‖first two entries of (E x1, Eᵀ x2)‖.  (N, 4) -> (N,)."""
    h1 = np.concatenate([xs[:, :2], np.ones((len(xs), 1))], axis=1)
    h2 = np.concatenate([xs[:, 2:], np.ones((len(xs), 1))], axis=1)
    line2, line1 = h1 @ E.T, h2 @ E
    norm = np.sqrt(line2[:, 0] ** 2 + line2[:, 1] ** 2 + line1[:, 0] ** 2 + line1[:, 1] ** 2)
    return np.sum(h2 * line2, axis=1) / np.maximum(norm, 1e-12)


def _robust_scale(v: np.ndarray, q: float) -> float:
    """q-th percentile of |v| (or of row norms for 2-D v), never zero."""
    size = np.abs(v) if v.ndim == 1 else np.linalg.norm(v, axis=1)
    return float(max(np.percentile(size, q), 1e-12)) if size.size else 1.0


def embed(xs: np.ndarray, is_inlier_gt: np.ndarray, method: str = "pca") -> np.ndarray:
    """Embed matches (N, 4) in 3-D, centred and scaled so that ~98% lie in the unit ball.

    ``pca``: the first three principal components of the (N, 4) matrix (variances kept).
    ``epipolar``: (x1, signed Sampson residual to the essential matrix fitted to the
    ground-truth inliers, y1), residual pointing up and scaled separately, so inliers form
    a flat horizontal sheet and outliers spread above and below it.
    """
    if method not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {method!r}")
    if len(xs) == 0:
        return np.zeros((0, 3))
    if method == "pca":
        centred = xs - xs.mean(axis=0)
        components = np.linalg.svd(centred, full_matrices=False)[2][:3]  # fewer when N < 3
        largest = components[np.arange(len(components)), np.abs(components).argmax(axis=1)]
        out = centred @ (components * np.where(largest < 0, -1.0, 1.0)[:, None]).T
        out = np.pad(out, ((0, 0), (0, 3 - out.shape[1])))
        return out / _robust_scale(out, 98)
    if int(is_inlier_gt.sum()) < 8:
        raise UserError(
            "the epipolar embedding needs >= 8 ground-truth inliers to fit E; use embedding='pca'"
        )
    residual = sampson_residual(xs, fit_essential(xs[is_inlier_gt]))
    image = xs[:, :2] - np.median(xs[:, :2], axis=0)
    image = image / _robust_scale(image, 98)
    return np.column_stack(
        [image[:, 0], residual / _robust_scale(residual[~is_inlier_gt], 90), image[:, 1]]
    )


def _read_texture(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Image file -> ((h, w, 3) uint8 RGB, longest side <= MAX_TEXTURE_SIDE; original (w, h))."""
    bgr = read_image(path)
    size = np.array([bgr.shape[1], bgr.shape[0]], dtype=np.float64)
    scale = MAX_TEXTURE_SIDE / max(bgr.shape[:2])
    if scale < 1:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr[:, :, ::-1]), size


def _panel(x0: float, width: float) -> np.ndarray:
    """Corners (4, 3) of a panel of height 1 starting at x0: TL, TR, BR, BL."""
    return np.array(
        [[x0, 1.0, 0.0], [x0 + width, 1.0, 0.0], [x0 + width, 0.0, 0.0], [x0, 0.0, 0.0]]
    )


def build_scene(
    xs: np.ndarray,
    is_inlier_gt: np.ndarray,
    is_kept: np.ndarray,
    *,
    image1: str | Path | None = None,
    image2: str | Path | None = None,
    K1: np.ndarray | None = None,
    K2: np.ndarray | None = None,
    show_true_negatives: bool = False,
    embedding: str = "pca",
) -> Scene:
    """Geometry of both views for matches xs (N, 4) (normalised) and (N,) boolean masks.

    With both images and both intrinsics the keypoints are projected to pixels and drawn on
    textured panels; with neither, each panel is the bounding box of its keypoint cloud.
    """
    xs, is_inlier_gt, is_kept = check_inputs(xs, is_inlier_gt, is_kept)
    images, intrinsics = (image1, image2), (K1, K2)
    textured = all(i is not None for i in images)
    if any(i is not None for i in images) and not textured:
        raise ValueError("give both image1 and image2, or neither")
    if textured and any(K is None for K in intrinsics):
        raise ValueError("image1/image2 need K1/K2 to place normalised keypoints on the images")

    textures: list[np.ndarray] = []
    origins, sizes, uv = [], [], []
    for i in range(2):
        xy = xs[:, 2 * i : 2 * i + 2]
        if textured:
            texture, size = _read_texture(images[i])  # type: ignore[arg-type]
            textures.append(texture)
            origins.append(np.zeros(2))
            sizes.append(size)
            uv.append(to_pixels(xy, intrinsics[i]))  # type: ignore[arg-type]
        else:
            lo, hi = (xy.min(axis=0), xy.max(axis=0)) if len(xy) else (np.zeros(2), np.ones(2))
            pad = 0.05 * np.maximum(hi - lo, 1e-6)
            origins.append(lo - pad)
            sizes.append(hi - lo + 2 * pad)
            uv.append(xy)

    panels, world = [], []
    x0 = 0.0
    for i in range(2):
        scale = 1.0 / sizes[i][1]
        panels.append(_panel(x0, sizes[i][0] * scale))
        local = (uv[i] - origins[i]) * scale
        world.append(np.column_stack([x0 + local[:, 0], 1.0 - local[:, 1]]))
        x0 += sizes[i][0] * scale + PANEL_GAP

    codes = outcomes(is_inlier_gt, is_kept)
    lines, points = {}, {}
    embedded = embed(xs, is_inlier_gt, embedding)
    for k, name in enumerate(OUTCOMES):
        selected = codes == k
        if name == "tn" and not show_true_negatives:
            selected = np.zeros_like(selected)
        ends = [np.column_stack([w[selected], np.full(selected.sum(), _Z[name])]) for w in world]
        lines[name] = np.stack(ends, axis=1).reshape(-1, 2, 3)
        points[name] = embedded[codes == k]
    keypoints = (
        np.zeros((0, 3))
        if textured
        else np.concatenate([np.column_stack([w, np.full(len(w), _Z["keypoints"])]) for w in world])
    )
    margin = 0.03
    bounds = np.array([-margin, x0 - PANEL_GAP + margin, -margin, 1.0 + margin])
    return Scene(
        panels=panels,
        textures=textures,
        keypoints=keypoints,
        lines=lines,
        points=points,
        pair_bounds=bounds,
    )
