"""COLMAP databases in and out: corrnet verifies the matches and writes two-view geometries.

    python -m corrnet.colmap_db --database DB [--image_path DIR] [--pairs PAIRS.txt]
                                [--output OUT.db] [--checkpoint F] [--device D] [--threshold PX]
                                [--inlier-threshold PX] [--batch-size B] [--workers W]
    python -m corrnet.colmap_db --database DB --image_path DIR --from-images [--pairs PAIRS.txt]
                                [--overwrite] ...
    corrnet colmap ...                  (the same, as the console command)

Reads every image's keypoints (COLMAP's 2-, 4- or 6-column rows: x, y[, scale, orientation |
affine shape]), the raw matches of every matched pair (or of the pairs of PAIRS.txt, names as
stored in the database) and the cameras' intrinsics, verifies each pair with
:meth:`corrnet.verifier.Verifier.verify_many` (the network, then PoseLib on the matches it
keeps) and writes its two-view geometry: E, F and R, t as ``cam2_from_cam1`` of that pose,
config ``CALIBRATED``, and as inliers every raw match within ``--inlier-threshold`` pixels of
the pose (default :data:`COLMAP_MAX_ERROR`, COLMAP's own two-view threshold, counted as COLMAP
counts an essential matrix's inliers: :func:`epipolar_inliers`), each keypoint at most once; a
pair without a pose (or with fewer than 8 raw matches) gets config ``UNDEFINED`` and no
inliers.  ``pycolmap.incremental_mapping`` then reconstructs from corrnet-verified matches.

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
either is written as ``OUT.db.partial`` (a copy, or the database ``--from-images`` builds,
made under a temporary name) and renamed into place once every pair is done, so it is
complete or as it was, and DB is never written to when ``--output`` is given.  Pairs are
verified in chunks of ``--batch-size`` (fixed by the pairs' order); each chunk's geometries
are committed, then recorded in the partial file's progress table (:class:`Progress`, with
the digest of the inputs: :func:`inputs_digest`).  After a kill the same command continues
with the chunks not recorded and gives the database of an uninterrupted run; a partial file
of other inputs is started over.

``--from-images`` creates DB from the images in DIR (``pycolmap.import_images`` for the
cameras, COLMAP's intrinsics guess: EXIF focal length or 1.2 x the larger side) with
corrnet's SIFT (keypoints with OpenCV's size and orientation) and nearest-neighbour matches of
every pair (all pairs without ``--pairs``); an existing DB is refused unless ``--overwrite``.

Pixel conventions: COLMAP puts the centre of the top-left pixel at (0.5, 0.5), corrnet at
(0, 0); keypoints are shifted by -0.5 on the way in (+0.5 on the way out) and K is
:func:`corrnet.datasets.colmap.pinhole_K`.  Cameras with distortion (SIMPLE_RADIAL, RADIAL,
OPENCV) have their keypoints undistorted to the pinhole part before verification.
"""

from __future__ import annotations

import functools
import hashlib
import math
import multiprocessing
import os
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycolmap
import torch
from tqdm import tqdm

from corrnet.atomic import atomic_path, check_regular_output, remove_stale_temporaries
from corrnet.datasets import prepare
from corrnet.datasets.colmap import CAMERA_MODELS, pinhole_K, undistorter
from corrnet.datasets.sample import MIN_MATCHES
from corrnet.errors import UserError, check_output
from corrnet.geometry.epipolar import sampson_distance
from corrnet.pairs import _content_lines, _pool, verifier_name
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


COLMAP_MAX_ERROR = float(pycolmap.TwoViewGeometryOptions().ransac.max_error)
"""Default inlier threshold of the written two-view geometries, in pixels: COLMAP's own
two-view verification's (``TwoViewGeometryOptions.ransac_options.max_error``, the
``--TwoViewGeometry.max_error`` option of ``colmap matches_importer`` and the matchers;
4 px)."""


def epipolar_inliers(result: Verification, max_error: float) -> np.ndarray:
    """(N,) bool: the matches of ``result`` (all of them, not only those the network kept)
    within ``max_error`` pixels of its pose, as COLMAP counts an essential matrix's inliers:
    Sampson error in normalised coordinates at most ``max_error`` over each camera's mean
    focal length, averaged over the two cameras; all False without a pose."""
    if not result.has_pose or len(result.xs) == 0:
        return np.zeros(len(result.xs), bool)
    focal = lambda K: (K[0, 0] + K[1, 1]) / 2
    limit = max_error * (1 / focal(result.K1) + 1 / focal(result.K2)) / 2
    x, E = torch.from_numpy(result.xs), torch.from_numpy(result.E)
    return (sampson_distance(x, E) <= limit**2).numpy()


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
    pair: DbPair,
    result: Verification,
    im1: _Image,
    im2: _Image,
    max_error: float = COLMAP_MAX_ERROR,
) -> pycolmap.TwoViewGeometry:
    """A pair's COLMAP two-view geometry: CALIBRATED with E, F (COLMAP pixels), R, t and, as
    inliers, the raw matches within ``max_error`` pixels of the pose (:func:`epipolar_inliers`,
    each keypoint once: :func:`unique_inliers`) where a pose was found, else UNDEFINED without
    inliers."""
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
        inlier_matches=unique_inliers(
            pair.matches, epipolar_inliers(result, max_error), result.scores
        ),
        cam2_from_cam1=pycolmap.Rigid3d(
            pycolmap.Rotation3d(np.asarray(result.R, np.float64)), np.asarray(result.t, np.float64)
        ),
    )


INPUTS_TABLE = "corrnet_inputs"
DONE_TABLE = "corrnet_done"
PARTIAL_SUFFIX = ".partial"
"""An unfinished output ``OUT.db`` is ``OUT.db.partial`` until every pair is written."""


class Progress:
    """The pairs already written to an unfinished output database, in two tables of its own:
    :data:`INPUTS_TABLE` (the digest of what the output is made from) and :data:`DONE_TABLE`
    (one row per pair whose two-view geometry is written), both removed by :func:`finish`."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path)

    def start(self, digest: str) -> None:
        """Create the tables of a new output of inputs ``digest``."""
        with self.connection:
            self.connection.execute(f"CREATE TABLE {INPUTS_TABLE} (digest TEXT NOT NULL)")
            self.connection.execute(f"CREATE TABLE {DONE_TABLE} (pair_id INTEGER PRIMARY KEY)")
            self.connection.execute(f"INSERT INTO {INPUTS_TABLE} VALUES (?)", (digest,))

    def digest(self) -> str | None:
        """The recorded inputs digest (None: not an unfinished output of corrnet's)."""
        try:
            row = self.connection.execute(f"SELECT digest FROM {INPUTS_TABLE}").fetchone()
        except sqlite3.DatabaseError:  # no such table, or not a database
            return None
        return None if row is None else row[0]

    def done(self) -> set[int]:
        """Pair ids whose two-view geometry is written."""
        return {r[0] for r in self.connection.execute(f"SELECT pair_id FROM {DONE_TABLE}")}

    def mark(self, pair_ids: Iterable[int]) -> None:
        """Record pairs as written (one committed transaction)."""
        with self.connection:
            self.connection.executemany(
                f"INSERT OR REPLACE INTO {DONE_TABLE} VALUES (?)", [(int(i),) for i in pair_ids]
            )

    def close(self) -> None:
        self.connection.close()


def verify_database(
    db: pycolmap.Database,
    verifier: Verifier,
    pairs_file: Path | None,
    where: Path,
    batch_size: int,
    pool: multiprocessing.pool.Pool | None = None,
    progress: bool = True,
    max_error: float = COLMAP_MAX_ERROR,
    record: Progress | None = None,
) -> tuple[int, int, int]:
    """Verify the database's pairs (PoseLib in ``pool``, else in this process) in chunks of
    ``batch_size`` pairs (fixed by the pairs' order), each chunk's two-view geometries
    replaced in one transaction, then marked in ``record``; chunks whose pairs ``record``
    holds are skipped.  Returns (pairs, pairs with a pose, pairs written by an earlier run)."""
    pairs = read_db_pairs(db, pairs_file, where)
    read = _reader(db, where)
    done = set() if record is None else record.done()
    pair_id = lambda p: pycolmap.image_pair_to_pair_id(p.id1, p.id2)
    chunks = [pairs[k : k + batch_size] for k in range(0, len(pairs), batch_size)]
    todo = [c for c in chunks if not all(pair_id(p) in done for p in c)]
    resumed = len(pairs) - sum(map(len, todo))
    bar = tqdm(total=len(pairs), initial=resumed, desc="pairs", unit="pair", disable=not progress)
    for chunk in todo:
        results = verifier.verify_many(
            [pair_input(p, read(p.id1), read(p.id2), verifier.needs, where) for p in chunk],
            batch_size,
            1,
            pool=pool,
            few_matches=True,
        )
        with pycolmap.DatabaseTransaction(db):
            for p, r in zip(chunk, results):
                if db.exists_two_view_geometry(p.id1, p.id2):
                    db.delete_two_view_geometry(p.id1, p.id2)
                geometry = two_view_geometry(p, r, read(p.id1), read(p.id2), max_error)
                db.write_two_view_geometry(p.id1, p.id2, geometry)
        if record is not None:  # after the commit: a kill in between redoes the chunk
            record.mark(pair_id(p) for p in chunk)
        bar.update(len(chunk))
    bar.close()
    calibrated = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
    posed = sum(db.read_two_view_geometry(p.id1, p.id2).config == calibrated for p in pairs)
    return len(pairs), posed, resumed


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


def image_names(images: Path) -> list[str]:
    """The image files of a folder (names relative to it, sorted) that ``--from-images``
    takes; FileNotFoundError when there are none."""
    names = sorted(
        str(p.relative_to(images)) for p in images.rglob("*") if p.suffix in IMAGE_SUFFIXES
    )
    if not names:
        raise FileNotFoundError(f"{images}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return names


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
    names = image_names(images)
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


def _file_digest(path: Path) -> str:
    """SHA-1 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def inputs_digest(
    database: Path,
    images: Path | None,
    pairs_file: Path | None,
    verifier: Verifier,
    max_error: float,
    batch_size: int,
) -> str:
    """What an output is made from: DB's bytes (and its write-ahead log), or with ``images``
    (``--from-images``) the images' names and contents; the pairs file; the weights and
    estimator settings; the inlier threshold; the batch size (batch composition decides
    float rounding)."""
    if images is None:
        lines = [f"database {_file_digest(database)}"]
        wal = database.with_name(database.name + "-wal")
        if wal.is_file():
            lines.append(f"wal {_file_digest(wal)}")
    else:
        lines = [f"{n}\t{prepare.image_digest(images / n)}" for n in image_names(images)]
    lines += [
        f"pairs {None if pairs_file is None else _file_digest(pairs_file)}",
        verifier_name(verifier),
        f"max_error {max_error!r} batch_size {batch_size}",
    ]
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()


def _remove_database(path: Path) -> None:
    """Remove an SQLite file and its journals."""
    for name in (path.name, path.name + "-wal", path.name + "-shm", path.name + "-journal"):
        (path.parent / name).unlink(missing_ok=True)


def _resumable(partial: Path, digest: str) -> bool:
    """Whether ``partial`` is an unfinished output of inputs ``digest`` (True) or absent;
    one of other inputs is removed (False).  UserError for a file there that is not one."""
    if not partial.exists():
        return False
    record = Progress(partial)
    try:
        recorded = record.digest()
    finally:
        record.close()
    if recorded is None:
        raise UserError(
            f"{partial}: exists and is not an unfinished output of corrnet colmap; "
            f"remove it or choose another output"
        )
    if recorded == digest:
        return True
    _remove_database(partial)
    return False


def finish(partial: Path, target: Path) -> None:
    """Move a complete ``partial`` onto ``target`` without its progress tables and without a
    write-ahead log: first to a temporary name (:func:`corrnet.atomic.atomic_path`), so that a
    kill meanwhile leaves no partial file without progress tables."""
    _sql(partial, "PRAGMA journal_mode=DELETE")  # checkpoints and removes the log
    with atomic_path(target, suffix=".db") as path:
        os.replace(partial, path)
        _sql(path, f"DROP TABLE {INPUTS_TABLE}", f"DROP TABLE {DONE_TABLE}")


def _sql(path: Path, *statements: str) -> None:
    """Run SQL statements on a database, committed."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            for statement in statements:
                connection.execute(statement)
    finally:
        connection.close()


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
    max_error: float = COLMAP_MAX_ERROR,
) -> tuple[Path, int, int, int]:
    """Verify a COLMAP database's pairs with corrnet (module docstring), resuming an
    unfinished run of the same inputs.  Returns the database written, the number of pairs,
    of pairs with a pose and of pairs an earlier run had written."""
    database = Path(database)
    pairs_file = None if pairs_file is None else Path(pairs_file)
    if pairs_file is not None and not pairs_file.is_file():
        raise FileNotFoundError(f"{pairs_file}: no such pairs file")
    if not (math.isfinite(max_error) and max_error > 0):
        raise UserError(f"max_error: expected a positive number of pixels, got {max_error!r}")
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
    partial = check_regular_output(target.with_name(target.name + PARTIAL_SUFFIX))
    remove_stale_temporaries(target.parent)  # of runs killed while copying or finishing
    verifier = Verifier(checkpoint, dev, threshold)
    images = Path(image_path) if from_images else None
    digest = inputs_digest(database, images, pairs_file, verifier, max_error, batch_size)
    pool = _pool(workers)  # SIFT, matching and PoseLib
    try:
        if not _resumable(partial, digest):
            with atomic_path(partial, suffix=".db") as path:  # complete or absent
                if from_images:
                    build_database(path, images, pairs_file, pool, progress)
                else:
                    _copy_database(database, path)
                record = Progress(path)
                try:
                    record.start(digest)
                finally:
                    record.close()
        db, record = pycolmap.Database.open(partial), Progress(partial)
        try:
            pairs, posed, resumed = verify_database(
                db, verifier, pairs_file, database, batch_size, pool, progress, max_error, record
            )
        finally:
            record.close()
            db.close()
        finish(partial, target)
    finally:
        if pool is not None:
            pool.close()  # queued tasks finish, the workers exit (no SIGTERM)
            pool.join()
    return target, pairs, posed, resumed


def main(argv: Sequence[str] | None = None, prog: str = "python -m corrnet.colmap_db") -> int:
    """Entry point: :func:`corrnet.commands.colmap.main` (exit status 0, or 2 for bad input)."""
    from corrnet.commands.colmap import main as command_main

    return command_main(argv, prog)


if __name__ == "__main__":
    sys.exit(main())
