"""corrnet.match: two images in, pose, matches and picture out; its bad-input errors.

The synthetic pair is rendered here with OpenCV (two textured planes seen by two known
cameras), so it needs no data; the real-dev pairs skip where ``../shared`` is absent.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import cv2
import numpy as np
import pytest
import tomllib
import torch

import corrnet
import corrnet.match as cm
from corrnet.checkpoint import PRETRAINED
from corrnet.cli import main as corrnet_cli
from corrnet.datasets.prepare import read_sequence
from corrnet.datasets.sample import normalized_matches
from corrnet.eval.estimators import PoseLibEstimator, failed
from corrnet.geometry import pose_errors
from corrnet.visualization.overlay import CAPTION_HEIGHT, MAX_WIDTH
from tests._data_reference import episym_np

ROOT = Path(__file__).resolve().parents[1]
SIZE = (640, 480)
K = np.array([[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]])


def _texture(rng: np.random.Generator, side: int = 512) -> np.ndarray:
    """Colour noise at three scales (uint8 (side, side, 3)): rich in SIFT keypoints."""
    layers = [
        cv2.GaussianBlur(rng.standard_normal((side, side, 3)), (0, 0), s) * s
        for s in (1.0, 3.0, 9.0)
    ]
    img = sum(layers)
    return np.clip(128 + 60 * img / img.std(), 0, 255).astype(np.uint8)


def _render(
    planes: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    R: np.ndarray,
    t: np.ndarray,
) -> np.ndarray:
    """Image of textured planes (texture, origin, axes a, b per texture pixel), painted far to
    near, by the camera K [R | t]: texture pixel (u, v) is the point origin + u a + v b."""
    out = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    for texture, origin, a, b in planes:
        H = K @ np.column_stack([R @ a, R @ b, R @ origin + t])
        warped = cv2.warpPerspective(texture, H, SIZE, flags=cv2.INTER_LINEAR)
        mask = cv2.warpPerspective(
            np.ones(texture.shape[:2], np.uint8), H, SIZE, flags=cv2.INTER_NEAREST
        )
        out[mask > 0] = warped[mask > 0]
    return out


def wall_and_panel(rng: np.random.Generator) -> list[tuple]:
    """A textured wall at depth 8 and a panel tilted by 30 degrees at depth ~4, as
    (texture, origin, a, b) planes for :func:`_render`."""
    tilt = np.radians(30)
    return [
        (
            _texture(rng),
            np.array([-6.0, -6.0, 8.0]),
            np.array([12 / 512, 0, 0]),
            np.array([0, 12 / 512, 0]),
        ),
        (
            _texture(rng),
            np.array([-1.5, -1.5, 4.0]),
            3 / 512 * np.array([np.cos(tilt), 0, np.sin(tilt)]),
            np.array([0, 3 / 512, 0]),
        ),
    ]


@pytest.fixture(scope="module")
def synthetic_pair(tmp_path_factory) -> dict:
    """Two views of a wall at depth 8 and a tilted panel at depth ~4; x2 = R x1 + t."""
    rng = np.random.default_rng(0)
    planes = wall_and_panel(rng)
    angle = np.radians(6)
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    t = np.array([-1.0, 0.1, 0.2])
    tmp = tmp_path_factory.mktemp("synthetic")
    paths = [tmp / "view1.png", tmp / "view2.png"]
    cv2.imwrite(str(paths[0]), _render(planes, np.eye(3), np.zeros(3)))
    cv2.imwrite(str(paths[1]), _render(planes, R, t))
    return {"images": paths, "R": R, "t": t / np.linalg.norm(t)}


def _kargs(K: np.ndarray) -> list[str]:
    return [repr(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2])]


def _cli(argv: list[str], capsys, entry=cm.main) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of the command line in this process."""
    try:
        code = entry(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _error(
    argv: list[str], capsys, match: str, prog: str = "python -m corrnet.match", entry=cm.main
) -> None:
    """The command fails with status 2 and one stderr line ``PROG: error: ...match...``."""
    code, out, err = _cli(argv, capsys, entry)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"{prog}: error: ") and match in err, err


def _pose_error(R: np.ndarray, t: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray) -> float:
    err_R, err_t = pose_errors(
        *(torch.as_tensor(np.asarray(a, np.float64)) for a in (R, t, R_gt, t_gt))
    )
    return max(float(err_R), float(err_t))


def test_synthetic_pair_cli(synthetic_pair, tmp_path, capsys, monkeypatch):
    out = tmp_path / "result"
    code, stdout, err = _cli(
        [
            *map(str, synthetic_pair["images"]),
            "--K1",
            *_kargs(K),
            "--K2",
            *_kargs(K),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    assert err == "" and len(stdout.splitlines()) == 1 and "inliers" in stdout
    pose = json.loads((out / "pose.json").read_text())
    R, t, E = (np.array(pose[k]) for k in ("R", "t", "E"))
    assert _pose_error(R, t, synthetic_pair["R"], synthetic_pair["t"]) < 2.0
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert abs(np.linalg.norm(t) - 1) < 1e-9
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    np.testing.assert_allclose(E, tx @ R, atol=1e-12)
    assert pose["intrinsics"] == "given" and pose["num_matches"] == 2000
    kept, inliers = set(pose["kept"]), set(pose["inliers"])
    assert len(kept) == pose["num_kept"] and inliers <= kept and len(inliers) > 200
    assert pose["estimator"] == {"name": "poselib", "threshold": 1.0, "threshold_unit": "px"}
    assert set(pose["times_ms"]) >= {"sift", "matching", "network", "estimator", "picture"}
    assert Path(pose["weights"]) == PRETRAINED
    assert pose["confident"] is True and pose["warnings"] == [] and pose["parallax_deg"] > 1
    # the 2-D overlay: both 640x480 views side by side below the caption band
    picture = cv2.imread(str(out / "matches.png"))
    assert picture.shape == (480 + CAPTION_HEIGHT, 1280, 3)
    # pose.json + matches.npz reproduce the inlier set
    assert pose["matches"] == "matches.npz"
    with np.load(out / pose["matches"]) as npz:
        m = {k: npz[k] for k in npz.files}
    assert sorted(m) == sorted(cm.MATCHES_KEYS) and m["kpts1"].shape == (2000, 2)
    assert np.flatnonzero(m["kept"]).tolist() == pose["kept"]
    assert np.flatnonzero(m["inliers"]).tolist() == pose["inliers"]
    K1, K2 = np.array(pose["K1"]), np.array(pose["K2"])
    threshold = pose["estimator"]["threshold"]
    kept = m["kept"]
    R2, t2, inl = PoseLibEstimator(max_epipolar_error=threshold).estimate(
        normalized_matches(m["kpts1"][kept], m["kpts2"][kept], K1, K2), K1, K2
    )
    assert np.flatnonzero(kept)[inl].tolist() == pose["inliers"]
    np.testing.assert_allclose(R2, R, atol=1e-12)
    np.testing.assert_allclose(t2, t, atol=1e-12)
    # ... and so do E and K alone: inliers are the kept matches within the threshold
    # (OpenCV's squared Sampson distance in pixels under F = K2^-T E K1^-1)
    F = np.linalg.inv(K2).T @ E @ np.linalg.inv(K1)
    sampson = np.array(
        [
            cv2.sampsonDistance(np.r_[a, 1.0][:, None], np.r_[b, 1.0][:, None], F)
            for a, b in zip(m["kpts1"], m["kpts2"])
        ]
    )
    np.testing.assert_array_equal(m["inliers"], kept & (sampson < threshold**2))
    np.testing.assert_allclose(m["scores"], 1 / (1 + np.exp(-m["logits"])), rtol=1e-12)
    # the same matches through the Python API; its inliers fit the true geometry
    result = corrnet.match_images(*synthetic_pair["images"], K, K)
    assert isinstance(result, corrnet.MatchResult)
    assert np.flatnonzero(result.inliers).tolist() == pose["inliers"]
    gt = episym_np(result.xs[result.inliers], synthetic_pair["R"], synthetic_pair["t"])
    assert np.median(gt) < 1e-6  # about (0.3 px / 500 px)^2
    # a second run into the same folder is refused; --overwrite replaces it
    argv = [
        *map(str, synthetic_pair["images"]),
        "--K1",
        *_kargs(K),
        "--K2",
        *_kargs(K),
        "--out",
        str(out),
    ]
    _error(argv, capsys, "already holds a result (pose.json, matches.npz, matches.png)")
    # --picture 3d: the Open3D picture of the same result
    drawn = []
    monkeypatch.setattr(
        "corrnet.visualization.render_pair",
        lambda png, xs, inliers, kept, **kw: drawn.append((xs, inliers, kept, kw)) or Path(png),
    )
    code, _, err = _cli([*argv, "--overwrite", "--picture", "3d"], capsys)
    assert code == 0, err
    ((xs, inliers, kept, kw),) = drawn
    assert np.flatnonzero(inliers).tolist() == pose["inliers"]
    assert np.flatnonzero(kept).tolist() == pose["kept"]
    assert kw["image1"] == synthetic_pair["images"][0]


def test_approximate_intrinsics_and_overwrite(synthetic_pair, tmp_path, capsys, monkeypatch):
    out = tmp_path / "result"
    (out).mkdir()
    (out / "pose.json").write_text("{}")
    drawn = []
    monkeypatch.setattr(
        cm,
        "render_matches",
        lambda result, png, picture: drawn.append(png) or Path(png).write_bytes(b""),
    )
    code, stdout, err = _cli(
        [*map(str, synthetic_pair["images"]), "--out", str(out), "--overwrite"], capsys
    )
    assert code == 0 and drawn == [out / "matches.png"]
    lines = err.splitlines()
    assert len(lines) == 2 and all(
        line.startswith("python -m corrnet.match: warning: ") for line in lines
    )
    assert "approximate intrinsics f = 768.0 px (1.2 x the larger image side)" in lines[0]
    pose = json.loads((out / "pose.json").read_text())
    assert pose["intrinsics"] == "approximate" and pose["intrinsics_source"] == {
        "K1": "default",
        "K2": "default",
    }
    np.testing.assert_allclose(pose["K1"], [[768, 0, 319.5], [0, 768, 239.5], [0, 0, 1]])
    # --no-picture: pose.json and matches.npz, no renderer called, the earlier picture removed
    code, stdout, err = _cli(
        [
            *map(str, synthetic_pair["images"]),
            "--out",
            str(out),
            "--overwrite",
            "--K1",
            *_kargs(K),
            "--K2",
            *_kargs(K),
            "--no-picture",
        ],
        capsys,
    )
    assert code == 0 and err == "" and drawn == [out / "matches.png"]
    assert sorted(p.name for p in out.iterdir()) == ["matches.npz", "pose.json"]
    pose = json.loads((out / "pose.json").read_text())
    assert pose["intrinsics"] == "given" and "picture" not in pose["times_ms"]
    # only the picture fails (no Vulkan driver): pose.json and matches.npz are still written,
    # exit status 1, and an earlier result's picture is removed
    (out / "pose.json").unlink()
    (out / "matches.png").write_bytes(b"an earlier picture")

    def no_driver(result, png, picture):
        raise RuntimeError(
            "Open3D rendering failed: worker exited with status 1\n    apt-get install ..."
        )

    monkeypatch.setattr(cm, "render_matches", no_driver)
    code, stdout, err = _cli(
        [
            *map(str, synthetic_pair["images"]),
            "--out",
            str(out),
            "--overwrite",
            "--K1",
            *_kargs(K),
            "--K2",
            *_kargs(K),
        ],
        capsys,
    )
    assert (
        code == 1
        and stdout == ""
        and "pose.json written, but no picture: Open3D rendering failed" in err
    )
    assert json.loads((out / "pose.json").read_text())["intrinsics"] == "given"
    assert sorted(p.name for p in out.iterdir()) == ["matches.npz", "pose.json"]
    with pytest.warns(cm.ApproximateIntrinsicsWarning, match="no K2 given"):
        result = cm.match_images(*synthetic_pair["images"], K1=(500, 500, 319.5, 239.5))
    assert result.intrinsics == {"K1": "given", "K2": "default"} and result.approximate
    np.testing.assert_array_equal(result.K1, K)


def _jpeg_with_exif(path: Path, focal_35mm: int, order: str) -> None:
    """A JPEG whose EXIF (byte order "<" or ">") holds FocalLengthIn35mmFilm, built by hand."""
    tag = b"II" if order == "<" else b"MM"
    # TIFF header, IFD0 at 8 with one entry (ExifIFD pointer -> 26), Exif IFD with two entries
    ifd0 = (
        struct.pack(order + "H", 1)
        + struct.pack(order + "HHII", 0x8769, 4, 1, 26)
        + struct.pack(order + "I", 0)
    )
    exif_ifd = (
        struct.pack(order + "H", 2)
        + struct.pack(order + "HHIHH", 0x829A, 5, 1, 0, 0)
        + struct.pack(order + "HHIHH", 0xA405, 3, 1, focal_35mm, 0)
        + struct.pack(order + "I", 0)
    )
    tiff = tag + struct.pack(order + "HI", 42, 8) + ifd0 + exif_ifd
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\0\0" + tiff
    ok, jpeg = cv2.imencode(".jpg", np.full((480, 640, 3), 128, np.uint8))
    path.write_bytes(jpeg.tobytes()[:2] + app1 + jpeg.tobytes()[2:])


@pytest.mark.parametrize("order", ["<", ">"])
def test_exif_focal_length(tmp_path, order):
    path = tmp_path / "exif.jpg"
    _jpeg_with_exif(path, 28, order)
    assert cv2.imread(str(path)).shape == (480, 640, 3)
    assert cm.exif_focal_35mm(path) == 28.0
    K_exif, source = cm.approximate_intrinsics(path, 640, 480)
    # 28 mm on the 36 x 24 mm frame (diagonal 43.27 mm); this image's diagonal is 800 px
    assert source == "exif" and K_exif[0, 0] == pytest.approx(
        28 * 800 / np.hypot(36, 24), rel=1e-12
    )
    assert (K_exif[0, 2], K_exif[1, 2]) == (319.5, 239.5)
    ok, plain = cv2.imencode(".jpg", np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "plain.jpg").write_bytes(plain.tobytes())
    assert cm.exif_focal_35mm(tmp_path / "plain.jpg") is None
    (tmp_path / "cut.jpg").write_bytes(path.read_bytes()[:40])  # EXIF cut short: no focal length
    assert cm.exif_focal_35mm(tmp_path / "cut.jpg") is None


def test_bad_input(synthetic_pair, tmp_path, capsys, monkeypatch):
    img1, img2 = map(str, synthetic_pair["images"])
    out = ["--out", str(tmp_path / "out")]
    _error([str(tmp_path / "missing.jpg"), img2, *out], capsys, "missing.jpg: no such image file")
    (tmp_path / "notes.jpg").write_text("not a picture\n")
    _error([img1, str(tmp_path / "notes.jpg"), *out], capsys, "notes.jpg: cannot read as an image")
    _error(
        [img1, img2, "--K1", "0", "500", "320", "240", *out],
        capsys,
        "--K1: expected positive focal lengths FX FY in pixels, got 0 500",
    )
    _error(
        [img1, img2, "--K2", "500", "-1", "320", "240", *out],
        capsys,
        "--K2: expected positive focal",
    )
    _error(
        [img1, img2, "--K1", "500", "500", "320", *out],
        capsys,
        "argument --K1: expected 4 arguments",
    )
    _error([img1, img2, "--K1", "500", "500", "320", "x", *out], capsys, "invalid float value: 'x'")
    _error(
        [img1, img2, "--threshold", "0", *out], capsys, "--threshold: expected a positive number"
    )
    for name in ("flat1.png", "flat2.png"):
        cv2.imwrite(str(tmp_path / name), np.full((480, 640, 3), 90, np.uint8))
    _error(
        [str(tmp_path / "flat1.png"), str(tmp_path / "flat2.png"), *out],
        capsys,
        "too few matches: expected at least 8 keypoints in image 1 and 2 in image 2, got 0",
    )
    (tmp_path / "file").write_text("")
    _error(
        [img1, img2, "--out", str(tmp_path / "file")], capsys, "file: exists and is not a folder"
    )
    _error([img1, img2, *out, "--device", "nonsense"], capsys, "--device:")
    _error(
        [img1, img2, *out, "--picture", "3d", "--no-picture"],
        capsys,
        "argument --no-picture: not allowed with argument --picture",
    )
    _error([img1, img2, *out, "--picture", "4d"], capsys, "invalid choice: '4d'")
    assert not (tmp_path / "out").exists()  # nothing written on any error
    with pytest.raises(
        ValueError, match=r"K1: expected 4 numbers FX FY CX CY \(or a 3x3 matrix\), got 5"
    ):
        cm.match_images(img1, img2, K1=[1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match=r"K2: expected \[\[fx, 0, cx\]"):
        cm.match_images(img1, img2, K2=np.ones((3, 3)))
    with pytest.raises(cm.MatchError, match="too few matches"):
        cm.match_images(tmp_path / "flat1.png", tmp_path / "flat2.png", K, K)
    monkeypatch.setattr(PoseLibEstimator, "estimate", lambda self, x, K1, K2: failed(len(x)))
    _error(
        [img1, img2, *out],
        capsys,
        "no pose found: the estimator 'poselib' found 0 inliers among the",
    )
    assert not (tmp_path / "out").exists()


def test_console_command(tmp_path, capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, name = scripts["corrnet"].split(":")
    assert getattr(import_module(module), name) is corrnet_cli
    _error(
        ["match", str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), "--out", str(tmp_path / "o")],
        capsys,
        "a.jpg: no such image file",
        prog="corrnet match",
        entry=corrnet_cli,
    )
    _error(
        ["frobnicate"],
        capsys,
        "got 'frobnicate'",
        prog="corrnet",
        entry=corrnet_cli,
    )
    # the real entry point, in a fresh process
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "corrnet.match",
            str(tmp_path / "a.jpg"),
            str(tmp_path / "b.jpg"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"python -m corrnet.match: error: {tmp_path / 'a.jpg'}: no such image file"
    ]


@pytest.mark.parametrize("seq, pair", [("fountain_P11", (0, 1)), ("lund_door", (2, 4))])
def test_real_dev_pairs(real_dev, tmp_path, capsys, seq, pair):
    spec = next(s for s in read_sequence(real_dev / seq) if s.key == f"{seq}/{pair[0]}-{pair[1]}")
    out = tmp_path / "result"
    code, stdout, err = _cli(
        [
            str(spec.image1),
            str(spec.image2),
            "--K1",
            *_kargs(spec.K1),
            "--K2",
            *_kargs(spec.K2),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    pose = json.loads((out / "pose.json").read_text())
    np.testing.assert_allclose(pose["K1"], spec.K1, rtol=1e-12)
    assert _pose_error(pose["R"], pose["t"], spec.R, spec.t / np.linalg.norm(spec.t)) < 5.0
    assert cv2.imread(str(out / "matches.png")).shape[1] <= MAX_WIDTH
    assert pose["confident"], pose["warnings"]


def test_identical_pair_is_not_confident(synthetic_pair, tmp_path, capsys):
    """An image matched with itself: a pose is written (exit 0), flagged not confident: one
    warning line on stderr, ``confident`` and ``warnings`` in pose.json."""
    image = str(synthetic_pair["images"][0])
    out = tmp_path / "same"
    code, stdout, err = _cli(
        [image, image, "--K1", *_kargs(K), "--K2", *_kargs(K), "--out", str(out), "--no-picture"],
        capsys,
    )
    assert code == 0 and len(stdout.splitlines()) == 1 and "NOT confident" in stdout
    assert "t undefined" in stdout  # no arbitrary unit vector printed as if it were known
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("python -m corrnet.match: warning: pose not confident: ")
    assert "translation undefined" in lines[0]
    pose = json.loads((out / "pose.json").read_text())
    assert pose["confident"] is False and len(pose["warnings"]) == 1
    assert pose["warnings"][0].startswith("translation undefined")
    assert pose["parallax_deg"] < 1e-3
    assert pose["t"] is None and pose["E"] is None and np.allclose(pose["R"], np.eye(3))


def test_images_as_arrays_and_reused_verifier(synthetic_pair, tmp_path):
    """Arrays give the result of their files; the shipped weights load once per process,
    and a given Verifier is used as it is."""
    paths = synthetic_pair["images"]
    from_files = corrnet.match_images(*paths, K, K)
    misses = cm.default_verifier.cache_info().misses
    arrays = [cv2.imread(str(p)) for p in paths]
    from_arrays = corrnet.match_images(*arrays, K, K)
    assert cm.default_verifier.cache_info().misses == misses and "load" not in from_arrays.times_ms
    assert from_arrays.image1 is None and from_arrays.to_json()["image1"] is None
    np.testing.assert_array_equal(from_arrays.kpts1, from_files.kpts1)
    np.testing.assert_array_equal(from_arrays.inliers, from_files.inliers)
    np.testing.assert_array_equal(from_arrays.R, from_files.R)
    grey = [cv2.cvtColor(a, cv2.COLOR_BGR2GRAY) for a in arrays]
    from_grey = corrnet.match_images(*grey, K, K)
    assert from_grey.num_inliers > 200 and from_grey.images[0].shape == (480, 640, 3)
    verifier = corrnet.Verifier(threshold=2.0)
    mine = corrnet.match_images(*arrays, K, K, verifier=verifier)
    assert mine.threshold == 2.0 and cm.default_verifier.cache_info().misses == misses
    assert mine.num_inliers >= from_arrays.num_inliers
    # write_result from Python: picture=False / True as before, the overlay of the arrays
    cm.write_result(from_arrays, tmp_path / "a", picture=False)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["matches.npz", "pose.json"]
    cm.write_result(from_arrays, tmp_path / "b", picture=True)
    assert cv2.imread(str(tmp_path / "b" / "matches.png")).shape == (480 + CAPTION_HEIGHT, 1280, 3)
    with pytest.raises(ValueError, match=r"^picture: expected one of \('2d', '3d'\) or None"):
        cm.write_result(from_arrays, tmp_path / "c", picture="4d")
    assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match=r"^img2: expected an image file or a uint8 array"):
        corrnet.match_images(arrays[0], arrays[1].astype(np.float32), K, K)
    with pytest.raises(ValueError, match="^checkpoint: expected either a checkpoint or a verifier"):
        corrnet.match_images(*arrays, K, K, checkpoint=PRETRAINED, verifier=verifier)


def test_num_features_sets_the_keypoints_per_image(synthetic_pair, tmp_path, capsys):
    """match_images / corrnet match --num-features K keep at most K SIFT keypoints per image
    (one match per image-1 keypoint), the first K of the default extraction's order only where
    OpenCV's detector keeps them; a count below eight is one line."""
    paths = synthetic_pair["images"]
    few = corrnet.match_images(*paths, K, K, num_features=300)
    default = corrnet.match_images(*paths, K, K)
    assert len(few.kpts1) <= 300 < len(default.kpts1)
    code, _, err = _cli(
        [*map(str, paths), "--K1", *_kargs(K), "--K2", *_kargs(K), "--out", str(tmp_path / "o")]
        + ["--num-features", "4"],
        capsys,
    )
    assert code == 2 and "--num-features: expected at least 8 keypoints per image, got 4" in err
    assert not (tmp_path / "o").exists()


def test_match_feeds_every_channel_the_weights_read(synthetic_pair):
    """corrnet.match_images hands the verifier everything SIFT measured, so weights that read
    the keypoints' scale and orientation (the ratio-free ones) run on two images as well."""
    from corrnet.checkpoint import PRETRAINED_RATIO_FREE

    paths = synthetic_pair["images"]
    ratio_free = corrnet.match_images(*paths, K, K, checkpoint=PRETRAINED_RATIO_FREE)
    default = corrnet.match_images(*paths, K, K)
    assert ratio_free.num_inliers > 100
    angle = np.degrees(np.arccos(np.clip((np.trace(ratio_free.R @ default.R.T) - 1) / 2, -1, 1)))
    assert angle < 1
