"""COLMAP databases in and out: corrnet verifies the matches and writes two-view geometries.

    python -m corrnet.colmap_db --database DB [--image_path DIR] [--pairs PAIRS.txt]
                                [--output OUT.db] [--checkpoint F] [--device D] [--threshold PX]
                                [--batch-size B] [--workers W]
    python -m corrnet.colmap_db --database DB --image_path DIR --from-images [--pairs PAIRS.txt]
                                [--overwrite] ...
    corrnet colmap ...                  (the same, as the console command)

Reads every image's keypoints (COLMAP's 2-, 4- or 6-column rows: x, y[, scale, orientation |
affine shape]), the raw matches of every matched pair (or of the pairs of PAIRS.txt, names as
stored in the database) and the cameras' intrinsics, verifies each pair with
:meth:`corrnet.verifier.Verifier.verify_many` and writes its two-view geometry: the estimator's
inlier matches (each keypoint at most once), E, F and R, t as ``cam2_from_cam1``, config
``CALIBRATED``; a pair without a pose (or with fewer than 8 raw matches) gets config
``UNDEFINED`` and no inliers.  ``pycolmap.incremental_mapping`` then
reconstructs from corrnet-verified matches.

Side information: a database has no ratio or mutual flag per match.  Where it holds the
images' descriptors (COLMAP stores them), both are computed from them for every raw match:
ratio = distance of the match / distance to the nearest other keypoint of image 2, mutual =
each keypoint is the other's nearest neighbour, as corrnet's own matching computes them
(:func:`corrnet.datasets.prepare.nearest_neighbours`), so the shipped weights, which take
them, can run.  Weights that read neither need no descriptors.
COLMAP's default SIFT descriptors are RootSIFT and its default matcher keeps only mutual
matches with ratio < 0.8, unlike the training data (OpenCV SIFT, every nearest neighbour);
``--from-images`` builds a database the way corrnet's training data was made.

Writing: only the database named by ``--output`` (a copy of DB) or, without it, DB itself;
either is written as a temporary copy and renamed into place once every pair is done, so it is
complete or as it was (also after a kill), and DB is never written to when ``--output`` is
given.  ``--from-images`` creates DB from the images in DIR (``pycolmap.import_images``
for the cameras, COLMAP's intrinsics guess: EXIF focal length or 1.2 x the larger side)
with corrnet's SIFT (keypoints with OpenCV's size and orientation) and nearest-neighbour
matches of every pair (all pairs without ``--pairs``); an existing DB is refused unless
``--overwrite``.

Pixel conventions: COLMAP puts the centre of the top-left pixel at (0.5, 0.5), corrnet at
(0, 0); keypoints are shifted by -0.5 on the way in (+0.5 on the way out) and K is
:func:`corrnet.datasets.colmap.pinhole_K`.  Cameras with distortion (SIMPLE_RADIAL, RADIAL,
OPENCV) have their keypoints undistorted to the pinhole part before verification.
"""

from __future__ import annotations

import functools
import multiprocessing
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycolmap
from tqdm import tqdm

from corrnet.atomic import atomic_path
from corrnet.datasets import prepare
from corrnet.datasets.colmap import CAMERA_MODELS, pinhole_K, undistorter
from corrnet.datasets.sample import MIN_MATCHES
from corrnet.errors import UserError, check_output
from corrnet.pairs import _content_lines, _pool
from corrnet.verifier import Verification, Verifier, as_device

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
"""Files ``--from-images`` takes from DIR."""


@dataclass(frozen=True)
class DbPair:
    """A matched pair of a database: image ids id1 < id2, names, raw matches (M, 2) uint32
    (keypoint indices in image id1, id2)."""

    id1: int
    id2: int
    name1: str
    name2: str
    matches: np.ndarray


def read_db_pairs(db: pycolmap.Database, pairs_file: Path | None, where: Path) -> list[DbPair]:
    """The pairs to verify: those of ``pairs_file`` (names as in the database; ValueError naming
    the file and line for an unknown name or a pair without matches) or every matched pair."""
    ids = {image.name: image.image_id for image in db.read_all_images()}
    names = {v: k for k, v in ids.items()}
    if pairs_file is None:
        pair_ids, matches = db.read_all_matches()
        out = []
        for pair_id, m in zip(pair_ids, matches):
            a, b = pycolmap.pair_id_to_image_pair(pair_id)
            out.append(DbPair(a, b, names[a], names[b], np.asarray(m, np.uint32)))
        return sorted(out, key=lambda p: (p.id1, p.id2))
    out, seen = [], set()
    for n, line in _content_lines(pairs_file):
        fields = line.split()
        if len(fields) != 2:
            raise UserError(f"{pairs_file}: line {n}: expected two image names, got {len(fields)}")
        for name in fields:
            if name not in ids:
                raise UserError(f"{pairs_file}: line {n}: {name}: no such image in {where}")
        a, b = sorted(ids[name] for name in fields)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        if not db.exists_matches(a, b):
            raise UserError(f"{pairs_file}: line {n}: {where} holds no matches of {line!r}")
        out.append(DbPair(a, b, names[a], names[b], np.asarray(db.read_matches(a, b), np.uint32)))
    if not out:
        raise UserError(f"{pairs_file}: no pairs (expected two image names per line)")
    return out


@dataclass(frozen=True)
class _Image:
    """What verification reads of an image: keypoints (n, 2) corrnet pixels (undistorted),
    scales (n,) and orientations (n,) degrees (None for 2-column keypoints), descriptors
    (n, D) float64 or None, K (3, 3) pinhole, COLMAP's calibration matrix (3, 3)."""

    keypoints: np.ndarray
    scales: np.ndarray | None
    angles: np.ndarray | None
    descriptors: np.ndarray | None
    K: np.ndarray
    K_colmap: np.ndarray


def _keypoint_shape(rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Scales and orientations (degrees) of COLMAP keypoint rows (n, 4) x y scale orientation
    or (n, 6) x y a11 a12 a21 a22 (COLMAP's FeatureKeypoint::ComputeScale / Orientation)."""
    if rows.shape[1] == 4:
        return rows[:, 2], np.degrees(rows[:, 3])
    if rows.shape[1] == 6:
        a11, a12, a21, a22 = rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5]
        scale = (np.hypot(a11, a21) + np.hypot(a12, a22)) / 2
        return scale, np.degrees(np.arctan2(a21, a11))
    return None, None


def _reader(db: pycolmap.Database, where: Path):
    """A cached reader of :class:`_Image` by image id."""
    images = {image.image_id: image for image in db.read_all_images()}
    cameras = {camera.camera_id: camera for camera in db.read_all_cameras()}

    @functools.lru_cache(maxsize=64)
    def read(image_id: int) -> _Image:
        camera = cameras[images[image_id].camera_id]
        if camera.model_name not in CAMERA_MODELS:
            raise UserError(
                f"{where}: image {images[image_id].name}: camera model {camera.model_name} not "
                f"supported; expected one of {', '.join(CAMERA_MODELS)}"
            )
        rows = np.asarray(db.read_keypoints(image_id), np.float64)
        uv = rows[:, :2] - 0.5
        undistort = undistorter(camera)
        if undistort is not None:
            uv = undistort(uv)
        scales, angles = _keypoint_shape(rows)
        desc = None
        if db.exists_descriptors(image_id):
            desc = np.asarray(db.read_descriptors(image_id).data, np.float64)
            if len(desc) != len(rows):
                desc = None
        return _Image(
            uv, scales, angles, desc, pinhole_K(camera), np.asarray(camera.calibration_matrix())
        )

    return read


def side_information(
    d1: np.ndarray, d2: np.ndarray, matches: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ratio (M,) and mutual flag (M,) bool of matches (M, 2) between descriptors d1 (n1, D),
    d2 (n2, D), n2 >= 2: d(i, j) / the distance of i to its nearest keypoint of image 2 other
    than j; whether j is i's nearest neighbour and i is j's."""
    i, j = matches[:, 0].astype(np.int64), matches[:, 1].astype(np.int64)
    sq1, sq2 = (d1 * d1).sum(1), (d2 * d2).sum(1)
    rows = np.maximum(sq1[i, None] + sq2[None] - 2.0 * d1[i] @ d2.T, 0.0)  # (M, n2)
    cols = np.maximum(sq1[:, None] + sq2[None, j] - 2.0 * d1 @ d2[j].T, 0.0)  # (n1, M)
    m = np.arange(len(matches))
    own = rows[m, j]
    rows[m, j] = np.inf
    ratio = np.sqrt(own) / np.maximum(np.sqrt(rows.min(1)), 1e-12)
    rows[m, j] = own
    mutual = (rows.argmin(1) == j) & (cols.argmin(0) == i)
    return ratio, mutual


def pair_input(
    pair: DbPair, im1: _Image, im2: _Image, needs: Sequence[str] = (), where: Path | None = None
) -> dict[str, np.ndarray | None]:
    """A database pair as :meth:`Verifier.verify` arguments (ratios and mutuals where both
    images have descriptors); UserError naming the database ``where`` and the images when an
    argument of ``needs`` (:attr:`Verifier.needs`) cannot be had."""
    i, j = pair.matches[:, 0].astype(np.int64), pair.matches[:, 1].astype(np.int64)
    ratios = mutuals = None
    if im1.descriptors is not None and im2.descriptors is not None and len(im2.descriptors) > 1:
        ratios, mutuals = side_information(im1.descriptors, im2.descriptors, pair.matches)
    pick = lambda a, idx: None if a is None else a[idx]
    args = dict(
        kpts1=im1.keypoints[i],
        kpts2=im2.keypoints[j],
        K1=im1.K,
        K2=im2.K,
        ratios=ratios,
        mutuals=mutuals,
        scales1=pick(im1.scales, i),
        scales2=pick(im2.scales, j),
        angles1=pick(im1.angles, i),
        angles2=pick(im2.angles, j),
    )
    missing = [name for name in needs if args.get(name) is None]
    if missing and len(pair.matches) >= MIN_MATCHES:  # fewer: no network, nothing needed
        raise UserError(
            f"{where}: images {pair.name1}, {pair.name2}: the weights read "
            f"{', '.join(missing)}, which this database cannot give (ratios and mutuals come "
            f"from both images' descriptors, scales and angles from 4- or 6-column keypoints; "
            f"descriptor distances are not read from databases)"
        )
    return args


def unique_inliers(matches: np.ndarray, inliers: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The inlier matches (K, 2) with each keypoint of either image at most once (the highest
    score wins), in the order of ``matches``: COLMAP's tracks take one match per keypoint."""
    idx = np.flatnonzero(inliers)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    keep = []
    used1, used2 = set(), set()
    for k in idx:
        a, b = int(matches[k, 0]), int(matches[k, 1])
        if a not in used1 and b not in used2:
            used1.add(a)
            used2.add(b)
            keep.append(k)
    return matches[np.sort(np.asarray(keep, np.int64))].astype(np.uint32)


def two_view_geometry(
    pair: DbPair, result: Verification, im1: _Image, im2: _Image
) -> pycolmap.TwoViewGeometry:
    """A pair's COLMAP two-view geometry: CALIBRATED with E, F (COLMAP pixels), R, t and the
    unique inlier matches where a pose was found, else UNDEFINED without inliers."""
    config = pycolmap.TwoViewGeometryConfiguration
    if not np.isfinite(result.R).all():
        return pycolmap.TwoViewGeometry(
            config=config.UNDEFINED, inlier_matches=np.zeros((0, 2), np.uint32)
        )
    E = np.asarray(result.E, np.float64)
    F = np.linalg.inv(im2.K_colmap).T @ E @ np.linalg.inv(im1.K_colmap)
    return pycolmap.TwoViewGeometry(
        config=config.CALIBRATED,
        E=E,
        F=F / np.linalg.norm(F),
        inlier_matches=unique_inliers(pair.matches, result.inliers, result.scores),
        cam2_from_cam1=pycolmap.Rigid3d(
            pycolmap.Rotation3d(np.asarray(result.R, np.float64)), np.asarray(result.t, np.float64)
        ),
    )


def verify_database(
    db: pycolmap.Database,
    verifier: Verifier,
    pairs_file: Path | None,
    where: Path,
    batch_size: int,
    pool: multiprocessing.pool.Pool | None = None,
    progress: bool = True,
) -> tuple[int, int]:
    """Verify the database's pairs (PoseLib in ``pool``, else in this process), then replace
    their two-view geometries in one transaction (nothing is written when a pair's input is
    refused).  Returns (pairs, pairs with a pose)."""
    pairs = read_db_pairs(db, pairs_file, where)
    read = _reader(db, where)
    geometries = []
    bar = tqdm(total=len(pairs), desc="pairs", unit="pair", disable=not progress)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        results = verifier.verify_many(
            [pair_input(p, read(p.id1), read(p.id2), verifier.needs, where) for p in chunk],
            batch_size,
            1,
            pool=pool,
            few_matches=True,
        )
        geometries += [
            two_view_geometry(p, r, read(p.id1), read(p.id2)) for p, r in zip(chunk, results)
        ]
        bar.update(len(chunk))
    bar.close()
    with pycolmap.DatabaseTransaction(db):
        for p, geometry in zip(pairs, geometries):
            if db.exists_two_view_geometry(p.id1, p.id2):
                db.delete_two_view_geometry(p.id1, p.id2)
            db.write_two_view_geometry(p.id1, p.id2, geometry)
    calibrated = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
    return len(pairs), sum(g.config == calibrated for g in geometries)


def _sift_job(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP keypoint rows (n, 4) float32 (x + 0.5, y + 0.5, OpenCV size, orientation in
    radians) and descriptors (n, 128) uint8 of an image with corrnet's SIFT."""
    kp, desc, scales, angles = prepare.sift_features(prepare.read_image(path))
    rows = np.column_stack([kp + 0.5, scales, np.radians(angles)]).astype(np.float32)
    return rows, desc.astype(np.uint8)


def _nn_job(task: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Raw matches (n1, 2) uint32: every keypoint of image 1 and its nearest neighbour."""
    d1, d2 = task
    nn = prepare.nearest_neighbours(d1, d2)[0]
    return np.column_stack([np.arange(len(d1)), nn]).astype(np.uint32)


def build_database(
    database: Path,
    images: Path,
    pairs_file: Path | None,
    pool: multiprocessing.pool.Pool | None = None,
    progress: bool = True,
) -> None:
    """Create ``database`` (must not exist) from the images of ``images`` with corrnet's SIFT
    and nearest-neighbour matches of the pairs of ``pairs_file`` (every pair without it), the
    work in ``pool`` (else in this process)."""
    names = sorted(
        str(p.relative_to(images)) for p in images.rglob("*") if p.suffix in IMAGE_SUFFIXES
    )
    if not names:
        raise FileNotFoundError(f"{images}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    pycolmap.import_images(database, images, image_names=names)
    db = pycolmap.Database.open(database)
    try:
        ids = {image.name: image.image_id for image in db.read_all_images()}
        run = map if pool is None else pool.imap
        desc = {}
        bar = dict(total=len(names), desc="SIFT", unit="image", disable=not progress)
        for name, (rows, d) in tqdm(zip(names, run(_sift_job, [images / n for n in names])), **bar):
            db.write_keypoints(ids[name], rows)
            db.write_descriptors(
                ids[name], pycolmap.FeatureDescriptors(pycolmap.FeatureExtractorType.SIFT, d)
            )
            desc[ids[name]] = d.astype(np.float32)
        if pairs_file is None:
            pairs = [
                (a, b)
                for k, a in enumerate(sorted(ids.values()))
                for b in sorted(ids.values())[k + 1 :]
            ]
        else:
            pairs = []
            for n, line in _content_lines(pairs_file):
                fields = line.split()
                if len(fields) != 2 or any(f not in ids for f in fields):
                    raise UserError(
                        f"{pairs_file}: line {n}: expected two image names of {images}, "
                        f"got {line!r}"
                    )
                pairs.append(tuple(sorted(ids[f] for f in fields)))
            pairs = list(dict.fromkeys(pairs))
        bar = dict(total=len(pairs), desc="matching", unit="pair", disable=not progress)
        tasks = [(desc[a], desc[b]) for a, b in pairs]
        for (a, b), m in tqdm(zip(pairs, run(_nn_job, tasks)), **bar):
            db.write_matches(a, b, m)
    finally:
        db.close()


def _copy_database(src: Path, dst: Path) -> None:
    """Copy an SQLite database with SQLite's backup (consistent even with a journal beside it)."""
    source = sqlite3.connect(f"{Path(src).resolve().as_uri()}?mode=ro", uri=True)  # read only
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def run_database(
    database: str | Path,
    image_path: str | Path | None = None,
    pairs_file: str | Path | None = None,
    output: str | Path | None = None,
    from_images: bool = False,
    overwrite: bool = False,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    threshold: float | None = None,
    batch_size: int = 16,
    workers: int = 1,
    progress: bool = True,
) -> tuple[Path, int, int]:
    """Verify a COLMAP database's pairs with corrnet (module docstring).  Returns the database
    written, the number of pairs and of pairs with a pose."""
    database = Path(database)
    pairs_file = None if pairs_file is None else Path(pairs_file)
    if pairs_file is not None and not pairs_file.is_file():
        raise FileNotFoundError(f"{pairs_file}: no such pairs file")
    dev = as_device(device)
    if from_images:
        if image_path is None or not Path(image_path).is_dir():
            raise FileNotFoundError(f"--image_path: {image_path}: no such image folder")
        check_output(database, {"--pairs": pairs_file}, overwrite)
    elif not database.is_file():
        raise FileNotFoundError(f"{database}: no such COLMAP database")
    if output is not None:
        output = check_output(
            Path(output), {"--database": database, "--pairs": pairs_file}, overwrite
        )
    target = database if output is None else output
    verifier = Verifier(checkpoint, dev, threshold)
    pool = _pool(workers)  # SIFT, matching and PoseLib
    try:
        with atomic_path(target, suffix=".db") as path:  # DB itself too: replaced when complete
            if from_images:
                build_database(path, Path(image_path), pairs_file, pool, progress)
            else:
                _copy_database(database, path)
            db = pycolmap.Database.open(path)
            try:
                pairs, posed = verify_database(
                    db, verifier, pairs_file, database, batch_size, pool, progress
                )
            finally:
                db.close()
    finally:
        if pool is not None:
            pool.close()  # queued tasks finish, the workers exit (no SIGTERM)
            pool.join()
    return target, pairs, posed


def main(argv: Sequence[str] | None = None, prog: str = "python -m corrnet.colmap_db") -> int:
    """Entry point: :func:`corrnet.commands.colmap.main` (exit status 0, or 2 for bad input)."""
    from corrnet.commands.colmap import main as command_main

    return command_main(argv, prog)


if __name__ == "__main__":
    sys.exit(main())
