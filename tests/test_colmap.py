"""Pairs from COLMAP models: poses, labels, undistortion, covisibility, and SfM on real-dev.

The synthetic scene is a textured plane seen by three pinhole cameras with known poses; its
COLMAP model is written with pycolmap (text and binary) and read back by ``--colmap``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pycolmap
import pytest

from corrnet.commands.prepare import main as prepare_cli
from corrnet.datasets import OANetPairs
from corrnet.datasets.colmap import (
    colmap_pairs,
    covisibility,
    parse_camera,
    read_model,
    reconstruct,
    select_pairs,
)
from tests._data_reference import episym_np, rotation_angle_deg

SHARED = Path(__file__).resolve().parents[2] / "shared"
W, H, F = 320, 240, 300.0
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]])  # pixel-centre convention
TEX_SCALE, PLANE_Z = 0.008, 4.0
TEX_W, TEX_H = 800, 600


def rot(axis: list[float], deg: float) -> np.ndarray:
    v = np.radians(deg) * np.asarray(axis, np.float64) / np.linalg.norm(axis)
    return cv2.Rodrigues(v)[0]


POSES = [
    (np.eye(3), np.zeros(3)),
    (rot([0.2, 1, 0], 8), np.array([-0.5, 0.05, 0.1])),
    (rot([0, 1, 0.1], -6), np.array([0.4, -0.1, 0.0])),
]
"""World-to-camera (R, T) of the three views."""


def plane_to_image(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Homography from texture pixels to image pixels of a camera (R, T)."""
    origin = np.array([-TEX_SCALE * (TEX_W - 1) / 2, -TEX_SCALE * (TEX_H - 1) / 2, PLANE_Z])
    return K @ np.c_[TEX_SCALE * R[:, 0], TEX_SCALE * R[:, 1], R @ origin + T]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """Folder with images/ of the three views."""
    root = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(0)
    tex = sum(cv2.GaussianBlur(rng.random((TEX_H, TEX_W)), (0, 0), s) * s for s in (1.0, 2.5, 6.0))
    tex = cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    (root / "images").mkdir()
    for k, (R, T) in enumerate(POSES):
        img = cv2.warpPerspective(tex, plane_to_image(R, T), (W, H), flags=cv2.INTER_LINEAR)
        cv2.imwrite(str(root / "images" / f"view{k}.png"), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    return root


def write_model(
    path: Path,
    cameras: list[tuple[str, list[float]]],
    fmt: str,
    tracks: list[list[int]] | None = None,
    poses: list | None = None,
) -> Path:
    """A COLMAP model of the scene: camera k of view k, 3-D points on the plane.

    ``cameras``: (model, params) per view in COLMAP's convention.  ``tracks``: views of each
    3-D point (default: 200 points in every view where they project inside the image).
    ``poses``: world-to-camera (R, T) per view (default POSES).
    """
    poses = POSES if poses is None else poses
    rec = pycolmap.Reconstruction()
    rng = np.random.default_rng(1)
    for k, (model, params) in enumerate(cameras):
        rec.add_camera_with_trivial_rig(
            pycolmap.Camera(camera_id=k + 1, model=model, width=W, height=H, params=params)
        )
    X = np.c_[rng.uniform(-2, 2, (200, 2)), np.full(200, PLANE_Z)]
    if tracks is None:
        tracks = [[k for k, (R, T) in enumerate(poses) if _inside(K @ (R @ x + T))] for x in X]
    obs: list[list[np.ndarray]] = [[] for _ in cameras]
    for x, views in zip(X, tracks):
        for k in views:
            R, T = poses[k]
            p = K @ (R @ x + T)
            obs[k].append(p[:2] / p[2] + 0.5)
    for k in range(len(cameras)):
        R, T = poses[k]
        image = pycolmap.Image(
            name=f"view{k}.png",
            keypoints=np.array(obs[k]).reshape(-1, 2),
            camera_id=k + 1,
            image_id=k + 1,
        )
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pycolmap.Rotation3d(R), T))
    used = [0] * len(cameras)
    for x, views in zip(X, tracks):
        track = pycolmap.Track()
        for k in views:
            track.add_element(k + 1, used[k])
            used[k] += 1
        if views:
            rec.add_point3D(x, track)
    path.mkdir(parents=True)
    (rec.write_text if fmt == "text" else rec.write_binary)(str(path))
    return path


def _inside(p: np.ndarray) -> bool:
    u, v = p[:2] / p[2]
    return 0 <= u < W and 0 <= v < H


PINHOLES = [
    ("PINHOLE", [F, F, K[0, 2] + 0.5, K[1, 2] + 0.5]),
    ("SIMPLE_PINHOLE", [F, K[0, 2] + 0.5, K[1, 2] + 0.5]),
    ("PINHOLE", [F, F, K[0, 2] + 0.5, K[1, 2] + 0.5]),
]


def _nn_reference(image1: Path, image2: Path) -> tuple[np.ndarray, np.ndarray]:
    """SIFT keypoints of image 1 and their L2 nearest neighbours in image 2 (brute force, px)."""
    sift = cv2.SIFT_create(nfeatures=2000, contrastThreshold=1e-5)
    (k1, d1), (k2, d2) = (sift.detectAndCompute(cv2.imread(str(p)), None) for p in (image1, image2))
    k1, d1, k2, d2 = (a[:2000] for a in (k1, d1, k2, d2))
    a, b = d1.astype(np.float64), d2.astype(np.float64)
    dist = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    uv1 = np.array([k.pt for k in k1])
    uv2 = np.array([k.pt for k in k2])[dist.argmin(1)]
    return uv1, uv2


@pytest.mark.parametrize("fmt", ["text", "binary"])
def test_model_pairs_have_the_known_poses_and_labels(scene, tmp_path, fmt):
    model = write_model(tmp_path / "model", PINHOLES, fmt)
    out = tmp_path / "pairs.hdf5"
    prepare_cli(
        [
            "--colmap",
            str(model),
            "--images",
            str(scene / "images"),
            "--out",
            str(out),
            "--workers",
            "1",
        ]
    )
    data = OANetPairs(out)
    assert len(data) == 3
    with h5py.File(out, "r") as f:
        assert f.attrs["source"] == "colmap" and f.attrs["images_registered"] == 3
    X = np.random.default_rng(2).normal(size=(10, 3)) + [0, 0, 5]
    for s, (i, j) in zip(data, [(0, 1), (0, 2), (1, 2)]):
        assert (Path(s["image1"]).name, Path(s["image2"]).name) == (f"view{i}.png", f"view{j}.png")
        (Ri, Ti), (Rj, Tj) = POSES[i], POSES[j]
        R, t = s["R"].double().numpy(), s["t"].double().numpy()
        Xi, Xj = X @ Ri.T + Ti, X @ Rj.T + Tj  # the same world points in both cameras
        t_true = Xj[0] - Xi[0] @ R.T
        np.testing.assert_allclose(Xj, Xi @ R.T + t_true, atol=1e-5)
        np.testing.assert_allclose(t, t_true / np.linalg.norm(t_true), atol=1e-6)
        np.testing.assert_allclose(s["K1"].numpy(), K, atol=1e-4)
        np.testing.assert_allclose(s["K2"].numpy(), K, atol=1e-4)
        uv1, uv2 = _nn_reference(
            scene / "images" / f"view{i}.png", scene / "images" / f"view{j}.png"
        )
        xs = np.c_[(uv1 - K[:2, 2]) / F, (uv2 - K[:2, 2]) / F]
        same = np.abs(s["xs"].numpy() - xs).max(1) < 1e-5
        assert same.mean() > 0.99  # the rest are ties between equally near descriptors
        t_rel = t_true / np.linalg.norm(t_true)
        labels = episym_np(xs, Rj @ Ri.T, t_rel).astype(np.float32) < 1e-4
        np.testing.assert_array_equal(s["labels"].numpy().astype(bool)[same], labels[same])
        assert labels.sum() >= 100  # the known poses explain the real matches


@pytest.mark.parametrize(
    "model, params",
    [
        ("SIMPLE_RADIAL", [F, 160.0, 120.0, 0.08]),
        ("RADIAL", [F, 160.0, 120.0, -0.2, 0.05]),
        ("OPENCV", [F, 0.9 * F, 161.0, 118.0, -0.2, 0.05, 0.01, -0.005]),
    ],
)
def test_distorted_keypoints_are_undistorted(model, params):
    from corrnet.datasets.colmap import pinhole_K, undistorter

    cam = pycolmap.Camera(camera_id=1, model=model, width=W, height=H, params=params)
    xy = np.random.default_rng(3).uniform(-0.5, 0.5, (100, 2))
    uv = cam.img_from_cam(np.c_[xy, np.ones(100)]) - 0.5  # COLMAP's distortion, OpenCV's pixels
    Kp = pinhole_K(cam)
    undistorted = undistorter(cam)(uv)
    np.testing.assert_allclose(undistorted, xy @ Kp[:2, :2].T + Kp[:2, 2], atol=1e-6)
    dist = np.zeros(4)
    dist[: len(params) - (3 if model != "OPENCV" else 4)] = params[3 if model != "OPENCV" else 4 :]
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)
    reference = cv2.undistortPoints(uv.reshape(-1, 1, 2), Kp, dist, None, None, Kp, crit).reshape(
        -1, 2
    )
    np.testing.assert_allclose(undistorted, reference, atol=1e-6)
    assert np.abs(uv - undistorted).max() > 1.0  # the distortion is not negligible


def test_distorted_camera_in_a_model_undistorts_its_keypoints(scene, tmp_path):
    k = 0.08
    distorted = [PINHOLES[0], ("SIMPLE_RADIAL", [F, K[0, 2] + 0.5, K[1, 2] + 0.5, k]), PINHOLES[2]]
    outs = {}
    for name, cams in (("pinhole", PINHOLES), ("radial", distorted)):
        model = write_model(tmp_path / name, cams, "binary")
        out = tmp_path / f"{name}.hdf5"
        prepare_cli(
            [
                "--colmap",
                str(model),
                "--images",
                str(scene / "images"),
                "--out",
                str(out),
                "--workers",
                "1",
            ]
        )
        outs[name] = OANetPairs(out)
    for a, b, (i, j) in zip(outs["pinhole"], outs["radial"], [(0, 1), (0, 2), (1, 2)]):
        xa, xb = a["xs"].double().numpy(), b["xs"].double().numpy()
        np.testing.assert_array_equal(a["ratios"].numpy(), b["ratios"].numpy())
        for side, view in ((0, i), (1, j)):
            raw = xa[:, 2 * side : 2 * side + 2]
            if view != 1:
                np.testing.assert_allclose(xb[:, 2 * side : 2 * side + 2], raw, atol=1e-6)
                continue
            pix = raw * F + K[:2, 2]
            ref = cv2.undistortPoints(
                pix.reshape(-1, 1, 2),
                K,
                np.array([k, 0, 0, 0.0]),
                None,
                None,
                None,
                (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15),
            ).reshape(-1, 2)
            np.testing.assert_allclose(xb[:, 2 * side : 2 * side + 2], ref, atol=1e-5)
            assert np.abs(ref - raw).max() > 1e-3


def test_covisibility_and_pair_selection(tmp_path):
    # views 0..3: 30 points in (0, 1), 10 in (0, 1, 2), 5 in (2, 3), 2 in (0, 3)
    tracks = [[0, 1]] * 30 + [[0, 1, 2]] * 10 + [[2, 3]] * 5 + [[0, 3]] * 2
    rec = read_model(
        write_model(tmp_path / "m", PINHOLES + [PINHOLES[0]], "text", tracks, POSES + [POSES[0]])
    )
    ids, counts = covisibility(rec)
    assert [rec.images[i].name for i in ids] == [f"view{k}.png" for k in range(4)]
    expected = np.array([[42, 40, 10, 2], [40, 40, 10, 0], [10, 10, 15, 5], [2, 0, 5, 7]])
    np.testing.assert_array_equal(counts, expected)
    # overlap: (0,1) 40/40, (0,2) 10/15, (1,2) 10/15, (2,3) 5/7, (0,3) 2/7, (1,3) none
    assert select_pairs(counts, 0.0, None) == [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)]
    assert select_pairs(counts, 0.5, None) == [(0, 1), (0, 2), (1, 2), (2, 3)]
    assert select_pairs(counts, 0.7, None) == [(0, 1), (2, 3)]
    eligible = select_pairs(counts, 0.0, None)
    for seed in range(5):
        kept = select_pairs(counts, 0.0, 1, seed)
        degree = np.bincount(np.ravel(kept), minlength=4)
        assert degree.max() <= 1
        assert all(degree[a] or degree[b] for a, b in eligible)  # no pair could still be added
    pairs = colmap_pairs(rec, tmp_path, "m", min_overlap=0.5)
    assert [p.key for p in pairs] == [
        "m/view0.png-view1.png",
        "m/view0.png-view2.png",
        "m/view1.png-view2.png",
        "m/view2.png-view3.png",
    ]
    with pytest.raises(ValueError, match="min_overlap"):
        select_pairs(counts, 1.5, None)


def test_bad_models_and_arguments(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="expected a COLMAP sparse model"):
        read_model(tmp_path)
    model = write_model(
        tmp_path / "fisheye", [("SIMPLE_RADIAL_FISHEYE", [F, 160, 120, 0.0])] + PINHOLES[1:], "text"
    )
    with pytest.raises(ValueError, match="camera 1: model SIMPLE_RADIAL_FISHEYE not supported"):
        read_model(model)
    for argv, message in (
        (["--colmap", str(model)], "need --images"),
        (["--colmap", str(tmp_path / "none"), "--images", str(tmp_path)], "sparse model"),
    ):
        try:
            code = prepare_cli([*argv, "--out", str(tmp_path / "x.hdf5")])
        except SystemExit as err:  # argparse
            code = err.code
        assert code == 2 and message in capsys.readouterr().err


def _real_dev_pose(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera R, T of a real-dev image, read straight from its calibration file."""
    with h5py.File(root / "calibration" / f"calibration_{Path(name).stem}.h5", "r") as f:
        return f["R"][()], f["T"][()].ravel()


FOUNTAIN = SHARED / "real-dev" / "fountain_P11" / "test"


def _fountain_pose_errors(model: Path) -> list[float]:
    """Relative pose error (max of rotation and translation angle, degrees) of each of
    fountain_P11's test pairs in a reconstruction of its images; 180 for a pair not in it."""
    found = {
        (p.image1.name, p.image2.name): p
        for p in colmap_pairs(read_model(model), FOUNTAIN / "images", "f", 0.0)
    }
    names = (FOUNTAIN / "images.txt").read_text().split()
    errors = []
    for line in (FOUNTAIN / "pairs.txt").read_text().splitlines():
        i, j = map(int, line.split())
        p = found.get((Path(names[i]).name, Path(names[j]).name))
        if p is None:
            errors.append(180.0)
            continue
        (Ri, Ti), (Rj, Tj) = _real_dev_pose(FOUNTAIN, names[i]), _real_dev_pose(FOUNTAIN, names[j])
        R = Rj @ Ri.T
        t = Tj - R @ Ti
        cos_t = p.t @ t / (np.linalg.norm(p.t) * np.linalg.norm(t))
        errors.append(
            max(rotation_angle_deg(R, p.R), float(np.degrees(np.arccos(np.clip(cos_t, -1, 1)))))
        )
    return errors


def test_sfm_recovers_fountain_poses(tmp_path):
    """pycolmap SfM of fountain_P11's 11 images against the real-dev ground truth (about 30 s)."""
    if not FOUNTAIN.is_dir():
        pytest.skip(f"{FOUNTAIN} not found (real-dev is looked up beside the repository)")
    model = reconstruct(FOUNTAIN / "images", tmp_path / "work")
    stamp = (model / "images.bin").stat().st_mtime_ns
    assert reconstruct(FOUNTAIN / "images", tmp_path / "work") == model  # a rerun reuses the model
    assert (model / "images.bin").stat().st_mtime_ns == stamp
    errors = np.array(_fountain_pose_errors(model))
    assert np.mean(errors < 2.0) >= 0.9


def test_sfm_with_fountain_intrinsics_keeps_them(tmp_path):
    """--camera with fountain_P11's calibrated K (about 20 s): the model keeps it exactly, and
    every pair comes within 1 degree of the ground truth."""
    if not FOUNTAIN.is_dir():
        pytest.skip(f"{FOUNTAIN} not found (real-dev is looked up beside the repository)")
    names = (FOUNTAIN / "images.txt").read_text().split()
    with h5py.File(FOUNTAIN / "calibration" / f"calibration_{Path(names[0]).stem}.h5", "r") as f:
        K, (w, h) = f["K"][()], f["imsize"][()]
    # raw-layout K: principal point relative to the image centre; COLMAP's pixel centres are at +0.5
    params = [
        float(v)
        for v in (K[0, 0], K[1, 1], (w - 1) / 2 + K[0, 2] + 0.5, (h - 1) / 2 + K[1, 2] + 0.5)
    ]
    model = reconstruct(
        FOUNTAIN / "images",
        tmp_path / "work",
        camera=parse_camera("PINHOLE", ",".join(map(repr, params))),
    )
    cameras = list(read_model(model).cameras.values())
    assert len(cameras) == 1
    np.testing.assert_allclose(cameras[0].params, params, rtol=1e-12)
    assert max(_fountain_pose_errors(model)) < 1.0


def test_sfm_without_a_model_is_an_error(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):  # unrelated noise: nothing to reconstruct
        cv2.imwrite(str(images / f"{k}.png"), (rng.random((120, 160, 3)) * 255).astype(np.uint8))
    code = prepare_cli(
        [
            "--sfm",
            "--images",
            str(images),
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "x.hdf5"),
        ]
    )
    assert code == 2 and "COLMAP registered" in capsys.readouterr().err
    assert not (tmp_path / "x.hdf5").exists()


def test_resumed_sfm_does_not_decode_the_images(tmp_path, monkeypatch):
    """camera_mode "auto" reads image sizes only for feature extraction: a run resumed after
    it (features.done) goes to mapping without decoding an image."""
    import corrnet.datasets.colmap as colmap

    images, work = tmp_path / "images", tmp_path / "work"
    images.mkdir()
    for k in range(2):
        cv2.imwrite(str(images / f"{k}.png"), np.zeros((8, 8), np.uint8))
    work.mkdir()
    for done in ("features.done", "matches.done"):
        (work / done).touch()

    def no_reading(*args, **kwargs):
        raise AssertionError("an image was read")

    monkeypatch.setattr(colmap, "image_size", no_reading)
    monkeypatch.setattr(colmap.pycolmap, "incremental_mapping", lambda *args, **kwargs: {})
    with pytest.raises(RuntimeError, match="registered no model"):
        reconstruct(images, work, camera_mode="auto")


def test_sfm_with_known_intrinsics_holds_them_fixed(tmp_path, monkeypatch):
    """--camera: one shared camera with the given parameters, not refined by bundle adjustment."""
    import corrnet.datasets.colmap as colmap

    images = tmp_path / "images"
    images.mkdir()
    for k in range(2):
        cv2.imwrite(str(images / f"{k}.png"), np.zeros((8, 8), np.uint8))
    seen = {}

    def extract(db, path, image_names, camera_mode, reader_options, **kwargs):
        seen.update(
            names=image_names,
            mode=camera_mode,
            model=reader_options.camera_model,
            params=reader_options.camera_params,
        )

    def mapping(db, path, out, options, **kwargs):
        seen["refined"] = (
            options.ba_refine_focal_length,
            options.ba_refine_principal_point,
            options.ba_refine_extra_params,
        )
        return {}

    monkeypatch.setattr(colmap.pycolmap, "extract_features", extract)
    monkeypatch.setattr(colmap.pycolmap, "match_exhaustive", lambda *args, **kwargs: None)
    monkeypatch.setattr(colmap.pycolmap, "incremental_mapping", mapping)
    camera = parse_camera("OPENCV", "520.9,521,325.6,250.2,0.23,-0.78,-0.0033,-1e-4")
    with pytest.raises(RuntimeError, match="registered no model"):
        reconstruct(images, tmp_path / "work", camera=camera)
    assert seen["names"] == ["0.png", "1.png"] and seen["mode"] == colmap.pycolmap.CameraMode.SINGLE
    assert seen["model"] == "OPENCV"
    np.testing.assert_array_equal(
        [float(v) for v in seen["params"].split(",")],
        [520.9, 521, 325.6, 250.2, 0.23, -0.78, -0.0033, -1e-4],
    )
    assert seen["refined"] == (False, False, False)
    with pytest.raises(ValueError, match="per-image contradicts"):
        reconstruct(images, tmp_path / "work2", camera_mode="per-image", camera=camera)
    cv2.imwrite(str(images / "2.png"), np.zeros((8, 6), np.uint8))  # COLMAP would skip it silently
    with pytest.raises(ValueError, match=r"2 sizes \(0.png and 2.png differ\)"):
        reconstruct(images, tmp_path / "work3", camera=camera)


def test_bad_known_intrinsics(tmp_path, capsys):
    with pytest.raises(ValueError, match="expected fx, fy, cx, cy"):
        parse_camera("PINHOLE", "520,521,325")
    with pytest.raises(ValueError, match="comma-separated numbers"):
        parse_camera("PINHOLE", "520,521,325,a")
    with pytest.raises(ValueError, match="camera model: expected one of"):
        parse_camera("FOV", "520,521,325,250,0.1")
    code = prepare_cli(
        [
            "--sfm",
            "--images",
            str(tmp_path),
            "--camera",
            "PINHOLE",
            "1,2,3",
            "--out",
            str(tmp_path / "x.hdf5"),
        ]
    )
    assert code == 2 and "camera params of PINHOLE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        prepare_cli(
            [
                "--colmap",
                str(tmp_path),
                "--images",
                str(tmp_path),
                "--camera",
                "PINHOLE",
                "1,2,3,4",
                "--out",
                str(tmp_path / "x.hdf5"),
            ]
        )
    assert err.value.code == 2 and "--camera: only with --sfm" in capsys.readouterr().err
