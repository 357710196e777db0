"""corrnet.colmap_db: COLMAP's keypoints and matches verified by corrnet, written back as
two-view geometries that pycolmap's incremental mapping reconstructs from.

The database tests use four photos of ``../shared/real-train/sceaux_castle`` (skipped where
absent); the side-information and inlier helpers run on random data.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pycolmap
import pytest
import torch

import corrnet.colmap_db as cdb
from corrnet.datasets import prepare
from corrnet.geometry import essential_from_pose
from corrnet.verifier import Verifier
from tests.conftest import need_shared
from tests.test_match import _error

NAMES = ["100_7100.jpg", "100_7101.jpg", "100_7102.jpg", "100_7103.jpg"]
PROG = "python -m corrnet.colmap_db"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Four consecutive photos of a castle, copied into a folder of their own."""
    source = need_shared("real-train", "sceaux_castle", "images")
    folder = tmp_path_factory.mktemp("photos")
    for name in NAMES:
        shutil.copy(source / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def colmap_db(photos, tmp_path_factory) -> Path:
    """A database as COLMAP's SIFT extraction and exhaustive matching write it."""
    db = tmp_path_factory.mktemp("colmap") / "colmap.db"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.sift.max_num_features = 2048
    extraction.num_threads = 2
    pycolmap.extract_features(db, photos, extraction_options=extraction, device=pycolmap.Device.cpu)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = 2
    pycolmap.match_exhaustive(db, matching_options=matching, device=pycolmap.Device.cpu)
    return db


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _geometries(path: Path) -> dict[tuple[int, int], pycolmap.TwoViewGeometry]:
    db = pycolmap.Database.open(path)
    try:
        pair_ids, geometries = db.read_two_view_geometries()
        return {pycolmap.pair_id_to_image_pair(i): g for i, g in zip(pair_ids, geometries)}
    finally:
        db.close()


def _registered(db: Path, photos: Path, out: Path) -> int:
    """Images registered by pycolmap's incremental mapping (largest model)."""
    out.mkdir()
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = 2
    models = pycolmap.incremental_mapping(db, photos, out, options)
    return max((m.num_reg_images() for m in models.values()), default=0)


def _sampson_px(F: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Sampson distance (M,) in pixels of matches x1, x2 (M, 2) under F (float64)."""
    h1, h2 = np.column_stack([x1, np.ones(len(x1))]), np.column_stack([x2, np.ones(len(x2))])
    Fx1, Ftx2 = h1 @ F.T, h2 @ F
    num = np.einsum("ij,ij->i", h2, Fx1)
    return np.abs(num) / np.sqrt(
        Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    )


def _normalised(camera: pycolmap.Camera, rows: np.ndarray) -> np.ndarray:
    """Keypoint rows (n, >= 2) in COLMAP's pixels -> (n, 2) normalised by COLMAP itself."""
    return np.asarray(camera.cam_from_img(np.asarray(rows[:, :2], np.float64)))


def test_verified_copy_reconstructs(colmap_db, photos, tmp_path):
    """--output: every matched pair gets a CALIBRATED geometry whose inliers are the raw
    matches, each keypoint once, within COLMAP's 4 px of the pose as COLMAP's own Sampson
    error counts them (the verifier's own inliers among them); DB is untouched; no progress
    file is left; incremental mapping registers the four images."""
    before = _digest(colmap_db)
    out = tmp_path / "verified.db"
    assert cdb.main(["--database", str(colmap_db), "--output", str(out), "--quiet"]) == 0
    assert _digest(colmap_db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verified.db"]
    db = pycolmap.Database.open(out)
    geometries = _geometries(out)
    try:
        read = cdb._reader(db, out)
        pairs = cdb.read_db_pairs(db, None, out)
        assert len(pairs) == 6 and set(geometries) == {(p.id1, p.id2) for p in pairs}
        results = Verifier().verify_many(
            [cdb.pair_input(p, read(p.id1), read(p.id2)) for p in pairs], workers=1
        )
        cameras = {c.camera_id: c for c in db.read_all_cameras()}
        camera = {im.image_id: cameras[im.camera_id] for im in db.read_all_images()}
        for p, r in zip(pairs, results):
            g = geometries[(p.id1, p.id2)]
            assert g.config == pycolmap.TwoViewGeometryConfiguration.CALIBRATED
            inliers = np.asarray(g.inlier_matches)
            within = cdb.epipolar_inliers(r, cdb.COLMAP_MAX_ERROR)
            np.testing.assert_array_equal(inliers, cdb.unique_inliers(p.matches, within, r.scores))
            assert within[r.inliers].all() and len(inliers) > 2 * r.num_inliers
            # COLMAP's own error of every raw match under the written E
            c1, c2 = camera[p.id1], camera[p.id2]
            k1, k2 = (np.asarray(db.read_keypoints(i), np.float64) for i in (p.id1, p.id2))
            err = np.asarray(
                pycolmap.compute_squared_sampson_error(
                    _normalised(c1, k1[p.matches[:, 0]]),
                    _normalised(c2, k2[p.matches[:, 1]]),
                    np.asarray(g.E),
                )
            )
            limit = (c1.cam_from_img_threshold(4.0) + c2.cam_from_img_threshold(4.0)) / 2
            np.testing.assert_array_equal(within, err <= limit**2)
            assert len(set(inliers[:, 0])) == len(set(inliers[:, 1])) == len(inliers)
            F = np.asarray(g.F)
            in1, in2 = k1[inliers[:, 0], :2], k2[inliers[:, 1], :2]
            assert _sampson_px(F, in1, in2).max() < 4.0 + 1e-6
            R, t = (
                np.asarray(g.cam2_from_cam1.rotation.matrix()),
                np.asarray(g.cam2_from_cam1.translation),
            )
            tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
            E = np.asarray(g.E)
            assert np.allclose(E / np.linalg.norm(E), tx @ R / np.linalg.norm(tx @ R), atol=1e-9)
    finally:
        db.close()
    assert _registered(out, photos, tmp_path / "sparse") == len(NAMES)


def test_from_images_reconstructs(photos, tmp_path):
    """--from-images: corrnet's SIFT keypoints (COLMAP's +0.5 convention), every keypoint's
    nearest neighbour as raw matches, verified geometries; the images register."""
    db_path = tmp_path / "corrnet.db"
    argv = ["--database", str(db_path), "--image_path", str(photos), "--from-images", "--quiet"]
    assert cdb.main(argv) == 0
    db = pycolmap.Database.open(db_path)
    try:
        ids = {image.name: image.image_id for image in db.read_all_images()}
        kp, desc = prepare.extract_sift(photos / NAMES[0])[:2]
        rows = np.asarray(db.read_keypoints(ids[NAMES[0]]))
        np.testing.assert_allclose(rows[:, :2], kp + 0.5, atol=1e-4)
        kp2, desc2 = prepare.extract_sift(photos / NAMES[1])[:2]
        a, b = ids[NAMES[0]], ids[NAMES[1]]
        nn = prepare.nearest_neighbours(desc, desc2)[0] if a < b else None
        if nn is not None:
            np.testing.assert_array_equal(np.asarray(db.read_matches(a, b))[:, 1], nn)
    finally:
        db.close()
    geometries = _geometries(db_path)
    assert len(geometries) == 6
    assert all(
        g.config == pycolmap.TwoViewGeometryConfiguration.CALIBRATED for g in geometries.values()
    )
    assert _registered(db_path, photos, tmp_path / "sparse") == len(NAMES)


def test_refusals(colmap_db, photos, tmp_path, capsys):
    """One line each: an existing database for --from-images, --output onto DB, an unknown
    image name in --pairs; nothing is written."""
    before = _digest(colmap_db)
    argv = ["--database", str(colmap_db), "--image_path", str(photos), "--from-images"]
    _error(argv, capsys, "already exists; pass --overwrite", PROG, cdb.main)
    _error(
        ["--database", str(colmap_db), "--output", str(colmap_db)],
        capsys,
        "is also the input --database",
        PROG,
        cdb.main,
    )
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"{NAMES[0]} {NAMES[1]}\n# c\n{NAMES[0]} nowhere.jpg\n")
    _error(
        ["--database", str(colmap_db), "--pairs", str(pairs)],
        capsys,
        "pairs.txt: line 3: nowhere.jpg: no such image",
        PROG,
        cdb.main,
    )
    assert _digest(colmap_db) == before


def test_side_information_matches_nearest_neighbours():
    """Ratios and mutual flags of the nearest-neighbour matches equal those of corrnet's
    matching (prepare.nearest_neighbours, computed another way)."""
    rng = np.random.default_rng(0)
    d1 = rng.integers(0, 60, (300, 128)).astype(np.float64)
    d2 = np.vstack([d1[:150] + rng.integers(-3, 4, (150, 128)), rng.integers(0, 60, (100, 128))])
    nn, ratio, mutual, _ = prepare.nearest_neighbours(d1, d2)
    got_ratio, got_mutual = cdb.side_information(d1, d2, np.column_stack([np.arange(300), nn]))
    np.testing.assert_allclose(got_ratio, ratio, rtol=1e-9)
    np.testing.assert_array_equal(got_mutual, mutual)
    assert 0 < mutual.sum() < 300


def test_unique_inliers():
    """Each keypoint once, the higher score winning; non-inliers never kept."""
    matches = np.array([[0, 5], [1, 5], [2, 6], [2, 7], [3, 8]], np.uint32)
    inliers = np.array([True, True, True, True, False])
    scores = np.array([0.2, 0.9, 0.5, 0.6, 1.0])
    np.testing.assert_array_equal(cdb.unique_inliers(matches, inliers, scores), [[1, 5], [2, 7]])


def _content(path: Path) -> list[str]:
    """Every table's schema and rows, as SQL (SQLite's dump, in rowid order)."""
    connection = sqlite3.connect(path)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def _done(partial: Path) -> int:
    """Pairs an unfinished output records as written (0 while it cannot be read yet)."""
    try:
        connection = sqlite3.connect(f"{partial.as_uri()}?mode=ro", uri=True)
        try:
            return connection.execute(f"SELECT COUNT(*) FROM {cdb.DONE_TABLE}").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:
        return 0


def test_resume_after_sigkill(colmap_db, tmp_path):
    """SIGKILL once a chunk is written, then the same command: it continues (the written
    pairs are not verified again) and the database equals an uninterrupted run's, table by
    table; no progress file is left."""
    reference = tmp_path / "reference.db"
    args = ["--database", str(colmap_db), "--batch-size", "1", "--quiet"]
    assert cdb.main([*args, "--output", str(reference)]) == 0
    out = tmp_path / "out" / "verified.db"
    command = [sys.executable, "-m", "corrnet.colmap_db", *args, "--output", str(out)]
    partial = out.with_name(out.name + cdb.PARTIAL_SUFFIX)
    proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _done(partial) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and partial.exists(), "the run finished before it was killed"
    done = _done(partial)
    assert 1 <= done < 6
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"6 pairs verified, {done} of them by an earlier run" in result.stdout
    assert _content(out) == _content(reference)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    # the same command again: the output exists
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and "already exists; pass --overwrite" in again.stderr


def test_unfinished_output_of_other_inputs_starts_over(colmap_db, tmp_path, capsys):
    """A progress file of other inputs (another inlier threshold) is replaced, one that is not
    corrnet's is refused, naming it."""
    out = tmp_path / "verified.db"
    partial = out.with_name(out.name + cdb.PARTIAL_SUFFIX)
    shutil.copy(colmap_db, partial)
    argv = ["--database", str(colmap_db), "--output", str(out), "--quiet", "--batch-size", "2"]
    _error(
        argv, capsys, "verified.db.partial: exists and is not an unfinished output", PROG, cdb.main
    )
    partial.unlink()
    record = cdb.Progress(partial)
    record.start("other inputs")
    record.mark([1, 2, 3])
    record.close()
    assert cdb.main([*argv, "--inlier-threshold", "2"]) == 0
    assert "6 pairs verified (" in capsys.readouterr().out
    assert not partial.exists()


def test_epipolar_inliers_are_colmaps():
    """epipolar_inliers: COLMAP's Sampson error (pycolmap, in normalised coordinates) against
    the threshold averaged over both cameras' mean focal lengths, on random matches with
    errors around the threshold."""
    rng = np.random.default_rng(1)
    R = np.asarray(pycolmap.Rotation3d(rng.normal(size=3) * 0.1).matrix())
    t = np.array([1.0, 0.2, 0.1]) / np.linalg.norm([1.0, 0.2, 0.1])
    E = essential_from_pose(torch.from_numpy(R), torch.from_numpy(t)).numpy()
    K1 = np.array([[800.0, 0, 320], [0, 780.0, 240], [0, 0, 1]])
    K2 = np.array([[1000.0, 0, 400], [0, 1010.0, 300], [0, 0, 1]])
    X = np.column_stack([rng.uniform(-1, 1, (400, 2)), rng.uniform(4, 8, 400)])
    x1 = X[:, :2] / X[:, 2:]
    Y = X @ R.T + t
    x2 = Y[:, :2] / Y[:, 2:] + rng.normal(size=(400, 2)) * 4 / 900
    xs = np.column_stack([x1, x2])
    result = types.SimpleNamespace(has_pose=True, xs=xs, E=E, K1=K1, K2=K2)
    got = cdb.epipolar_inliers(result, 4.0)
    err = np.asarray(pycolmap.compute_squared_sampson_error(x1, x2, E))
    limit = 4.0 * (2 / (800 + 780) + 2 / (1000 + 1010)) / 2
    np.testing.assert_array_equal(got, err <= limit**2)
    assert 50 < got.sum() < 350
    result.has_pose = False
    assert not cdb.epipolar_inliers(result, 4.0).any()
