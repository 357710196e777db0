"""Incremental SfM from COLMAP's geometric verification and from corrnet's, against ground truth.

    python benchmarks/colmap_reconstruct.py --seq DIR [--seq DIR ...] [--work DIR]
                                            [--threads 2] [--workers W] [--checkpoint F]
                                            [--inlier-threshold PX]

Each ``--seq`` is a sequence folder in OANet's raw layout (``DIR/test/images.txt`` and
``calibration.txt``; the calibration files give every image's K and world-to-camera R, T).
One COLMAP database per sequence (:func:`corrnet.datasets.colmap.extract_and_match`: COLMAP's
SIFT, at most 4096 features per image, exhaustive matching and COLMAP's geometric verification,
all on the CPU) with one PINHOLE camera holding the ground-truth intrinsics, then
``pycolmap.incremental_mapping`` with the intrinsics held fixed, twice:

* ``colmap``: the database as matching left it (COLMAP's two-view geometries);
* ``corrnet``: a copy whose two-view geometries corrnet wrote
  (:func:`corrnet.colmap_db.run_database`, i.e. ``corrnet colmap --database DB --image_path DIR
  --output CORRNET.db [--inlier-threshold PX]``), from the same keypoints and raw matches.

Per model: images registered, mean reprojection error (px), 3-D points; the registered camera
centres are aligned to the ground truth's by the least-squares similarity (Umeyama's closed
form, ``pycolmap.estimate_sim3d``), then the camera-centre error (median; in the ground truth's
units and in % of the scene scale = the mean distance between any two ground-truth camera
centres) and the rotation error (median and max, degrees); and, free of any alignment, the
rotation error of the relative rotation of every pair of registered images (median and max,
degrees).  The alignment's rotation rests on the camera centres alone: with few cameras on a
short, nearly straight path it is weakly determined about that line, and the rotation errors
after it share a common part that the relative rotation errors do not have.  Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pycolmap
import torch

from corrnet.arguments import pixel_threshold
from corrnet.colmap_db import COLMAP_MAX_ERROR, run_database
from corrnet.datasets.colmap import _quiet_colmap, extract_and_match, incremental_model
from corrnet.datasets.prepare import _read_list, load_calibration
from corrnet.errors import UserError
from corrnet.eval.evaluate import default_workers
from corrnet.geometry.pose import rotation_angle_deg


class GroundTruth(NamedTuple):
    """A sequence's ground truth: the images' folder, their names (n,), the shared intrinsics
    K (3, 3) (pixel-centre convention), world-to-camera R (n, 3, 3) and T (n, 3)."""

    images: Path
    names: list[str]
    K: np.ndarray
    R: np.ndarray
    T: np.ndarray

    @property
    def centres(self) -> np.ndarray:
        """Camera centres (n, 3): C = -Rᵀ T."""
        return -np.einsum("nji,nj->ni", self.R, self.T)

    @property
    def scale(self) -> float:
        """Mean distance between any two camera centres."""
        C = self.centres
        d = np.linalg.norm(C[:, None] - C[None], axis=-1)
        return float(d[np.triu_indices(len(C), 1)].mean())


class Row(NamedTuple):
    """One model's measurements (``centre_*``: GT units and % of :attr:`GroundTruth.scale`)."""

    sequence: str
    verification: str
    registered: int
    images: int
    points: int
    reprojection_px: float
    centre_median: float
    centre_median_pct: float
    rotation_median_deg: float
    rotation_max_deg: float
    relative_median_deg: float
    relative_max_deg: float
    mapping_seconds: float


def read_ground_truth(seq: Path) -> GroundTruth:
    """The ground truth of a raw-layout sequence folder; UserError when its images are not in
    one folder or do not share one K."""
    root = seq / "test"
    images = [root / p for p in _read_list(root / "images.txt")]
    calibs = [load_calibration(root / p) for p in _read_list(root / "calibration.txt")]
    if len(images) != len(calibs):
        raise UserError(
            f"{root}: images.txt has {len(images)} lines, calibration.txt {len(calibs)}"
        )
    if len({p.parent for p in images}) != 1:
        raise UserError(f"{root / 'images.txt'}: expected the images in one folder")
    K = calibs[0][0]
    for path, (Ki, _, _) in zip(images, calibs):
        if not np.allclose(Ki, K, rtol=0, atol=1e-9):
            raise UserError(
                f"{root}: {path.name}: expected every image to share {images[0].name}'s K"
            )
    return GroundTruth(
        images[0].parent,
        [p.name for p in images],
        K,
        np.stack([c[1] for c in calibs]),
        np.stack([c[2] for c in calibs]),
    )


def pinhole_camera(K: np.ndarray) -> tuple[str, list[float]]:
    """COLMAP's PINHOLE parameters fx, fy, cx, cy of K (3, 3) in the pixel-centre convention
    (COLMAP puts the centre of the top-left pixel at 0.5, 0.5)."""
    return "PINHOLE", [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]) + 0.5, float(K[1, 2]) + 0.5]


def align(src: np.ndarray, tgt: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The least-squares similarity tgt ≈ s R src + t of points src, tgt (n, 3), n >= 3 not
    collinear: (s, R (3, 3), t (3,)) from ``pycolmap.estimate_sim3d`` (Umeyama)."""
    sim = None
    if len(src) >= 3:
        sim = pycolmap.estimate_sim3d(np.asarray(src, np.float64), np.asarray(tgt, np.float64))
    if sim is None:
        raise ValueError(f"no similarity between {len(src)} points (fewer than 3, or collinear)")
    return float(sim.scale), np.asarray(sim.rotation.matrix()), np.asarray(sim.translation)


def pose_errors(
    R: np.ndarray, C: np.ndarray, R_gt: np.ndarray, C_gt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Errors of world-to-camera rotations R (n, 3, 3) and camera centres C (n, 3) against the
    ground truth R_gt, C_gt after aligning C to C_gt (:func:`align`): centre distances (n,)
    in the ground truth's units, rotation angles (n,) in degrees."""
    s, Ra, t = align(C, C_gt)
    centre = np.linalg.norm(s * C @ Ra.T + t - C_gt, axis=1)
    return centre, _angle_deg(R @ Ra.T, R_gt)


def relative_rotation_errors(R: np.ndarray, R_gt: np.ndarray) -> np.ndarray:
    """Rotation errors (n (n - 1) / 2,) in degrees of the relative rotations R_j R_iᵀ of every
    pair i < j of world-to-camera rotations R (n, 3, 3) against the ground truth's R_gt: free
    of any alignment."""
    i, j = np.triu_indices(len(R), 1)
    rel = lambda Q: Q[j] @ Q[i].transpose(0, 2, 1)
    return _angle_deg(rel(R), rel(R_gt))


def _angle_deg(R: np.ndarray, R_gt: np.ndarray) -> np.ndarray:
    """Angles (n,) in degrees between rotations R and R_gt (n, 3, 3), in float64."""
    return rotation_angle_deg(torch.from_numpy(R), torch.from_numpy(R_gt)).numpy()


def measure(
    rec: pycolmap.Reconstruction | None,
    gt: GroundTruth,
    sequence: str,
    verification: str,
    mapping_seconds: float,
) -> Row:
    """A model's row against the ground truth (NaN errors with fewer than 3 registered)."""
    nan = float("nan")
    images = [] if rec is None else [rec.images[i] for i in rec.reg_image_ids()]
    if len(images) >= 3:
        index = [gt.names.index(im.name) for im in images]
        R = np.stack([im.cam_from_world().rotation.matrix() for im in images])
        C = np.stack([np.asarray(im.projection_center()).ravel() for im in images])
        centre, rotation = pose_errors(R, C, gt.R[index], gt.centres[index])
        relative = relative_rotation_errors(R, gt.R[index])
        errors = (
            float(np.median(centre)),
            100 * float(np.median(centre)) / gt.scale,
            float(np.median(rotation)),
            float(rotation.max()),
            float(np.median(relative)),
            float(relative.max()),
        )
    else:
        errors = (nan,) * 6
    return Row(
        sequence,
        verification,
        len(images),
        len(gt.names),
        0 if rec is None else rec.num_points3D(),
        nan if rec is None else rec.compute_mean_reprojection_error(),
        *errors,
        mapping_seconds,
    )


def reconstruct_both(
    gt: GroundTruth,
    sequence: str,
    work: Path,
    threads: int,
    workers: int,
    checkpoint: Path | None = None,
    max_error: float = COLMAP_MAX_ERROR,
) -> tuple[list[Row], dict[str, float]]:
    """The ``colmap`` and ``corrnet`` rows of one sequence, its files in ``work`` (new), and
    the seconds of SIFT + matching + COLMAP's verification and of corrnet's verification
    (``max_error``: its inlier threshold in pixels)."""
    work.mkdir(parents=True)
    db, verified = work / "database.db", work / "corrnet.db"
    start = time.perf_counter()
    extract_and_match(
        gt.images, db, "exhaustive", "single", threads, pinhole_camera(gt.K), gt.names
    )
    seconds = {"colmap": time.perf_counter() - start}
    start = time.perf_counter()
    run_database(
        db,
        gt.images,
        output=verified,
        checkpoint=checkpoint,
        workers=workers,
        progress=False,
        max_error=max_error,
    )
    seconds["corrnet"] = time.perf_counter() - start
    rows = []
    for name, database in (("colmap", db), ("corrnet", verified)):
        out = work / f"{name}-model"
        out.mkdir()
        start = time.perf_counter()
        rec, _ = incremental_model(database, gt.images, out, threads, fixed_intrinsics=True)
        rows.append(measure(rec, gt, sequence, name, time.perf_counter() - start))
    return rows, seconds


def table(rows: list[Row]) -> str:
    """Markdown table of rows."""
    lines = [
        "| sequence | verification | registered | 3-D points | reproj. error (px) "
        "| centre error, median | centre error, median (% scale) "
        "| rotation error, median / max (deg) | relative rotation error, median / max (deg) "
        "| mapping (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.sequence} | {r.verification} | {r.registered}/{r.images} | {r.points} "
            f"| {r.reprojection_px:.3f} | {r.centre_median:.4f} | {r.centre_median_pct:.3f} "
            f"| {r.rotation_median_deg:.3f} / {r.rotation_max_deg:.3f} "
            f"| {r.relative_median_deg:.3f} / {r.relative_max_deg:.3f} | {r.mapping_seconds:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seq", type=Path, action="append", required=True, help="sequence folder")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=default_workers(), help="COLMAP threads")
    parser.add_argument("--workers", type=int, default=default_workers(), help="PoseLib processes")
    parser.add_argument("--checkpoint", type=Path, help="corrnet weights (default: shipped)")
    parser.add_argument(
        "--inlier-threshold",
        type=pixel_threshold,
        default=COLMAP_MAX_ERROR,
        metavar="PX",
        help=f"corrnet colmap --inlier-threshold (default {COLMAP_MAX_ERROR:g}, COLMAP's)",
    )
    args = parser.parse_args(argv)
    for seq in args.seq:
        if not (seq / "test" / "images.txt").is_file():
            parser.error(f"--seq: {seq}: expected a sequence folder with test/images.txt")
    try:
        truths = [read_ground_truth(seq) for seq in args.seq]
    except (OSError, ValueError) as err:
        parser.error(f"--seq: {err}")
    names = [seq.resolve().name for seq in args.seq]
    if len(set(names)) != len(names):
        parser.error(f"--seq: expected sequence folders of different names, got {names}")
    work = args.work or Path(tempfile.mkdtemp(prefix="colmap-reconstruct-"))
    for name in names:
        if (work / name).exists():
            parser.error(f"--work: {work / name} exists; expected a new folder per sequence")
    _quiet_colmap()
    rows, notes = [], []
    for gt, name in zip(truths, names):
        seq_rows, seconds = reconstruct_both(
            gt,
            name,
            work / name,
            args.threads,
            args.workers,
            args.checkpoint,
            args.inlier_threshold,
        )
        rows += seq_rows
        notes.append(
            f"{name}: SIFT + exhaustive matching + COLMAP's verification "
            f"{seconds['colmap']:.1f} s, corrnet's verification {seconds['corrnet']:.1f} s"
        )
    print(
        "PINHOLE camera with the ground-truth intrinsics, held fixed in bundle adjustment; "
        "scale = mean distance between any two ground-truth camera centres; "
        f"{args.threads} COLMAP threads, {args.workers} PoseLib processes; corrnet's inliers "
        f"within {args.inlier_threshold:g} px of its pose; {work}\n"
    )
    print(table(rows))
    print("\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
