"""3-D pairs from RGB-D sequences in the layout of ``../shared/real-dev-3d``.

A sequence folder holds ``depth/frame-XXXXXX.depth.png`` (uint16 depth in millimetres, 0 = no
measurement), ``pose/frame-XXXXXX.pose.txt`` (4×4 camera-to-world, metres) and
``camera-intrinsics.txt`` (3×3).  Frame i's cloud in camera coordinates is
X = depth / 1000 · K⁻¹ [u, v, 1]ᵀ; the transform that maps it onto frame j's is
T_j⁻¹ T_i.  Every pair (i, j), i < j, with :func:`~corrnet.datasets.pairs3d.overlap` of at
least ``min_overlap`` is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from corrnet.constants import MIN_OVERLAP, MIN_RIGID_MATCHES, NUM_MATCHES_3D
from corrnet.errors import UserError
from corrnet.geometry.checks import intrinsics_problem
from corrnet.geometry.rigid import rigid_problem
from corrnet.images import read_image

from .oanet_hdf5 import MAX_PIXELS
from .pairs3d import Fragment, describe, match_fragments, overlap

MAX_DEPTH = 4.0
"""Depth readings beyond this many metres are dropped (Kinect v1 noise grows as z²)."""
MIN_FOCAL_PX = 1.0
"""Smallest focal length of a depth camera in pixels (below it, a 640-pixel-wide frame would see
179.8 degrees)."""


def depth_points(depth_m: np.ndarray, K: np.ndarray, max_depth: float = MAX_DEPTH) -> np.ndarray:
    """Back-projected valid pixels of a depth image (H, W) in metres -> (P, 3) camera frame."""
    v, u = np.nonzero((depth_m > 0) & (depth_m < max_depth) & np.isfinite(depth_m))
    z = depth_m[v, u]
    return np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], 1)


def _read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        M = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read a {shape[0]}x{shape[1]} matrix ({err})") from None
    if M.shape != shape:
        raise UserError(f"{path}: expected a {shape[0]}x{shape[1]} matrix, got shape {M.shape}")
    return M


def read_sequence(folder: Path) -> list[tuple[str, Path, np.ndarray]]:
    """(frame name, depth PNG, 4×4 camera-to-world pose) of every frame of a sequence, checked."""
    depth_dir = folder / "depth"
    frames = sorted(depth_dir.glob("*.depth.png")) if depth_dir.is_dir() else []
    if not frames:
        raise FileNotFoundError(
            f"{depth_dir}: no depth/frame-*.depth.png files (expected the "
            f"layout of ../shared/real-dev-3d)"
        )
    out = []
    for png in frames:
        name = png.name.removesuffix(".depth.png")
        pose_path = folder / "pose" / f"{name}.pose.txt"
        T = _read_matrix(pose_path, (4, 4))
        problem = rigid_problem(T)
        if problem is not None:
            raise UserError(f"{pose_path}: {problem}")
        out.append((name, png, T))
    return out


def read_intrinsics(folder: Path) -> np.ndarray:
    """``camera-intrinsics.txt`` of a sequence, checked: (3, 3), focal lengths in
    [:data:`MIN_FOCAL_PX`, ``MAX_PIXELS``] and |principal point| <= ``MAX_PIXELS`` pixels."""
    path = folder / "camera-intrinsics.txt"
    K = _read_matrix(path, (3, 3))
    problem = intrinsics_problem(K)
    focal, centre = (K[0, 0], K[1, 1]), (K[0, 2], K[1, 2])
    if problem is None and not all(MIN_FOCAL_PX <= f <= MAX_PIXELS for f in focal):
        problem = (
            f"expected focal lengths in [{MIN_FOCAL_PX:g}, {MAX_PIXELS:g}] pixels, got "
            f"fx = {focal[0]:g}, fy = {focal[1]:g}"
        )
    if problem is None and not all(abs(c) <= MAX_PIXELS for c in centre):
        problem = f"expected |cx|, |cy| <= {MAX_PIXELS:g} pixels, got {centre[0]:g}, {centre[1]:g}"
    if problem is not None:
        raise UserError(f"{path}: {problem}")
    return K


def read_depth(png: Path) -> np.ndarray:
    """A uint16 millimetre depth PNG as metres (H, W) float64."""
    depth = read_image(png, cv2.IMREAD_UNCHANGED)
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise UserError(f"{png}: expected a single-channel uint16 depth PNG (millimetres)")
    return depth.astype(np.float64) / 1000.0


def frame_fragment(png: Path, K: np.ndarray) -> Fragment:
    """The :class:`~corrnet.datasets.pairs3d.Fragment` of one depth frame; UserError naming
    the file when it has fewer than ``MIN_RIGID_MATCHES`` points left after downsampling (an
    all-zero frame, or every reading beyond :data:`MAX_DEPTH`)."""
    points = depth_points(read_depth(png), K)
    frag = describe(points) if len(points) else None
    if frag is None or len(frag.points) < MIN_RIGID_MATCHES:
        raise UserError(
            f"{png}: {len(points)} depth readings in (0, {MAX_DEPTH:g}) m, "
            f"{0 if frag is None else len(frag.points)} points after downsampling; expected "
            f"at least {MIN_RIGID_MATCHES} (an all-zero or out-of-range depth frame)"
        )
    return frag


def rgbd_pairs(
    folder: Path,
    min_overlap: float = MIN_OVERLAP,
    num_matches: int = NUM_MATCHES_3D,
    seed: int = 0,
    progress: bool = True,
) -> Iterator[dict]:
    """The pairs of one sequence folder with overlap >= ``min_overlap``, as
    :func:`~corrnet.datasets.pairs3d.match_fragments` dictionaries with a ``name``."""
    K = read_intrinsics(folder)
    frames = read_sequence(folder)
    frags: list[Fragment] = [
        frame_fragment(png, K)
        for _, png, _ in tqdm(frames, desc=f"FPFH {folder.name}", disable=not progress)
    ]
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            rel = np.linalg.inv(frames[j][2]) @ frames[i][2]
            R, t = rel[:3, :3], rel[:3, 3]
            share = overlap(frags[i].points, frags[j].points, R, t)
            if share >= min_overlap:
                pair = match_fragments(
                    frags[i], frags[j], R, t, num_matches, seed=seed * 1_000_003 + i * 1000 + j
                )
                yield {
                    **pair,
                    "overlap": share,
                    "name": f"{folder.name}/{frames[i][0]}/{frames[j][0]}",
                }
