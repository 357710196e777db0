"""ORB and AKAZE beside SIFT (``--detector``): extraction, Hamming matching, the protocol and
caches that keep detectors apart, and the verifier's choice of the ratio-free weights."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import cv2
import h5py
import numpy as np
import pytest

import corrnet
import corrnet.match as cm
from corrnet.checkpoint import PRETRAINED, PRETRAINED_RATIO_FREE
from corrnet.commands.eval import main as eval_main
from corrnet.commands.prepare import main as prepare_cli
from corrnet.constants import DETECTORS
from corrnet.datasets import prepare as prep
from corrnet.datasets.oanet_hdf5 import OANetPairs
from tests.test_cli_errors import call, raw, refused  # noqa: F401 (raw: the fixture)
from tests.test_match import K, _render, wall_and_panel

HAS_AKAZE = hasattr(cv2, "AKAZE_create") or hasattr(
    getattr(cv2, "xfeatures2d", None), "AKAZE_create"
)
BINARY = [
    "orb",
    pytest.param(
        "akaze",
        marks=pytest.mark.skipif(
            not HAS_AKAZE,
            reason=f"OpenCV {cv2.__version__} has no AKAZE (OpenCV 5: opencv-contrib-python)",
        ),
    ),
]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict:
    """Two views of a textured wall and a tilted panel (tests/test_match.py), x2 = R x1 + t."""
    planes = wall_and_panel(np.random.default_rng(0))
    angle = np.radians(6)
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    t = np.array([-1.0, 0.1, 0.2])
    tmp = tmp_path_factory.mktemp("scene")
    paths = [tmp / "view1.png", tmp / "view2.png"]
    images = [_render(planes, np.eye(3), np.zeros(3)), _render(planes, R, t)]
    for path, image in zip(paths, images):
        cv2.imwrite(str(path), image)
    return {"paths": paths, "images": images, "R": R, "t": t / np.linalg.norm(t), "tmp": tmp}


def _angles(R: np.ndarray, t: np.ndarray, scene: dict) -> tuple[float, float]:
    """Rotation and translation-direction errors in degrees against the scene's motion."""
    cos_r = (np.trace(R @ scene["R"].T) - 1) / 2
    return (
        float(np.degrees(np.arccos(np.clip(cos_r, -1, 1)))),
        float(np.degrees(np.arccos(np.clip(t @ scene["t"], -1, 1)))),
    )


@pytest.mark.parametrize("detector", BINARY)
def test_binary_matches_verify_with_the_ratio_free_weights(scene, detector):
    """match_images(detector=...) with the default weights: the ratio-free weights verify the
    matches (result.weights says so) and find the scene's motion."""
    result = corrnet.match_images(*scene["paths"], K, K, detector=detector)
    assert result.weights == PRETRAINED_RATIO_FREE and result.detector == detector
    assert result.to_json()["detector"] == detector
    assert result.confident and result.num_inliers > 100
    rotation, translation = _angles(result.R, result.t, scene)
    assert rotation < 1 and translation < 5, (rotation, translation)
    sift = corrnet.match_images(*scene["paths"], K, K)
    assert sift.weights == PRETRAINED and sift.detector == "sift"


@pytest.mark.parametrize("detector", BINARY)
def test_hamming_matches_agree_with_opencv(scene, detector):
    """Binary descriptors: nearest neighbour, both distances, ratio and mutual flag agree with
    cv2.BFMatcher(NORM_HAMMING); sizes and angles are the keypoints' (ORB's size is its patch
    size 31 times 1.2 to the power of the octave)."""
    f1, f2 = (prep.detect_features(img, 2000, detector) for img in scene["images"])
    assert f1.desc.dtype == np.uint8 and len(f1.kp) <= 2000
    m = prep.putative_matches(f1, f2, K, K)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    knn = matcher.knnMatch(f1.desc, f2.desc, k=2)
    two = np.array([[a.distance, b.distance] for a, b in knn])
    np.testing.assert_array_equal(m.dists, two)
    np.testing.assert_allclose(m.ratios, two[:, 0] / two[:, 1], rtol=1e-12)
    clear = two[:, 1] > two[:, 0]  # the nearest neighbour is unique
    assert clear.mean() > 0.5
    nn = np.array([a.trainIdx for a, _ in knn])
    np.testing.assert_array_equal(m.nn[clear], nn[clear])
    back = matcher.knnMatch(f2.desc, f1.desc, k=2)  # image 2's nearest in image 1
    unique = np.array([x.distance < y.distance for x, y in back])
    rows = np.flatnonzero(clear & unique[nn])  # mutual is well defined there
    assert len(rows) > 100 and 0 < m.mutuals[rows].mean() < 1
    mutual = np.array([back[nn[q]][0].trainIdx == q for q in rows])
    np.testing.assert_array_equal(m.mutuals[rows], mutual)
    np.testing.assert_array_equal(m.sizes[:, 0], f1.sizes)
    np.testing.assert_array_equal(m.angles[:, 1], f2.angles[m.nn])
    assert (f1.angles >= 0).all() and (f1.angles < 360).all()
    if detector == "orb":
        kps = cv2.ORB_create(nfeatures=2000).detect(scene["images"][0], None)
        octaves = np.array([k.octave for k in kps[: len(f1.sizes)]])
        np.testing.assert_allclose(f1.sizes, 31 * 1.2**octaves, rtol=1e-6)


@pytest.mark.skipif(not HAS_AKAZE, reason=f"OpenCV {cv2.__version__} has no AKAZE")
def test_akaze_keeps_the_strongest_keypoints(scene):
    """AKAZE: the K keypoints of largest response of OpenCV's detector, strongest first."""
    kps = prep.akaze_factory()().detect(scene["images"][0], None)
    responses = np.sort([k.response for k in kps])[::-1]
    few = prep.detect_features(scene["images"][0], 300, "akaze")
    assert len(kps) > 300 and len(few.kp) == 300
    strongest = {(round(k.pt[0], 3), round(k.pt[1], 3)) for k in kps if k.response > responses[300]}
    kept = {(round(x, 3), round(y, 3)) for x, y in few.kp}
    assert strongest <= kept


def test_missing_akaze_and_bad_detector_are_one_line(monkeypatch, scene, capsys, tmp_path):
    """An OpenCV without AKAZE and a detector name outside DETECTORS: one line each."""
    monkeypatch.setattr(prep, "cv2", SimpleNamespace(__version__="5.0.0"))
    with pytest.raises(ValueError, match=r"^detector akaze: OpenCV 5.0.0 has no AKAZE") as err:
        prep.akaze_factory()
    assert "\n" not in str(err.value)
    pairs = tmp_path / "pairs.json"
    pairs.write_text("[]")
    argv = ["--pairs-file", str(pairs), "--out", str(tmp_path / "a.hdf5"), "--detector", "akaze"]
    capsys.readouterr()
    assert prepare_cli(argv) == 2  # before any work
    assert capsys.readouterr().err.startswith("corrnet prepare: error: detector akaze: OpenCV")
    monkeypatch.undo()
    for attempt in (
        lambda: prep.detect_features(scene["images"][0], 100, "surf"),
        lambda: corrnet.match_images(*scene["paths"], K, K, detector="surf"),
        lambda: prep.protocol(2000, "surf"),
    ):
        with pytest.raises(
            ValueError, match=r"^detector: expected one of sift, orb, akaze, got 'surf'$"
        ):
            attempt()
    argv = [*map(str, scene["paths"]), "--out", str(tmp_path / "o"), "--detector", "surf"]
    with pytest.raises(SystemExit) as exit_:
        cm.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert "argument --detector: invalid choice: 'surf'" in err


def test_detector_keys_the_protocol_caches_and_output(scene, tmp_path, capsys):
    """The detector is part of the protocol (recorded in the file with a detector attribute)
    and keys the per-image and per-pair caches and the inputs digest: a SIFT preparation
    reuses none of an ORB one's cache entries and does not reuse (or replace) its output."""
    spec = prep.PairSpec("scene/0-1", *scene["paths"], K, K, scene["R"], scene["t"])
    image = scene["paths"][0]
    assert prep.protocol() == prep.protocol(prep.NUM_FEATURES, "sift")
    assert len({prep.protocol(2000, d) for d in DETECTORS}) == len(DETECTORS)
    assert len({prep._feature_cache_name(image, 2000, d) for d in DETECTORS}) == len(DETECTORS)
    assert len({prep._pair_cache_name(spec, 2000, d) for d in DETECTORS}) == len(DETECTORS)
    assert len({prep.inputs_digest([spec], 2000, d) for d in DETECTORS}) == len(DETECTORS)
    pairs = tmp_path / "pairs.json"
    entry = {"name": spec.key, "image1": str(spec.image1), "image2": str(spec.image2)}
    entry |= {k: np.asarray(getattr(spec, k)).tolist() for k in ("K1", "K2", "R", "t")}
    pairs.write_text(json.dumps([entry]))
    out = tmp_path / "orb.hdf5"
    args = ["--pairs-file", str(pairs), "--out", str(out), "--workers", "1", "--keep-cache"]
    assert prepare_cli([*args, "--detector", "orb"]) == 0
    with h5py.File(out, "r") as f:
        assert f.attrs[prep.PROTOCOL_ATTR] == prep.protocol(2000, "orb")
        assert f.attrs[prep.DETECTOR_ATTR] == "orb"
    sample = OANetPairs(out, side_info=True)[0]
    assert sample["ratios"].max() <= 1 and sample["sizes"].shape == (len(sample["xs"]), 2)
    before = {p.name for p in prep.cache_dir_for(out).rglob("*.npz")}
    capsys.readouterr()
    assert prepare_cli(args) == 2  # SIFT asked: the ORB file is neither reused nor replaced
    assert "made by another preparation protocol" in capsys.readouterr().err
    with h5py.File(out, "r") as f:
        assert f.attrs[prep.DETECTOR_ATTR] == "orb"
    sift_out = tmp_path / "sift.hdf5"
    shutil.copytree(prep.cache_dir_for(out), prep.cache_dir_for(sift_out))
    assert prepare_cli([*args[:3], str(sift_out), *args[4:]]) == 0
    made = {p.name for p in prep.cache_dir_for(sift_out).rglob("*.npz")} - before
    assert len(made) == 3  # two images' features and one pair, all new
    with h5py.File(sift_out, "r") as f:
        assert f.attrs[prep.DETECTOR_ATTR] == "sift"
        assert f.attrs[prep.PROTOCOL_ATTR] == prep.protocol()


def test_verifier_chooses_the_weights_from_the_arguments(scene):
    """The default verifier: ratios -> the shipped weights, scales and angles alone -> the
    ratio-free ones (Verification.weights), in verify and verify_many (mixed batches give
    the results of single calls); neither -> one line naming both options."""
    f1, f2 = (prep.detect_features(img, 2000, "orb") for img in scene["images"])
    m = prep.putative_matches(f1, f2, K, K)
    verifier = corrnet.Verifier()
    base = dict(kpts1=m.uv1, kpts2=m.uv2, K1=K, K2=K)
    with_ratios = {**base, **m.measurements()}
    without = {**base, **m.measurements(ratios=False)}
    assert set(without) == set(base) | {"scales1", "scales2", "angles1", "angles2"}
    a, b = verifier.verify(**with_ratios), verifier.verify(**without)
    assert a.weights == PRETRAINED and b.weights == PRETRAINED_RATIO_FREE
    assert verifier.weight_files == (PRETRAINED, PRETRAINED_RATIO_FREE)
    rotation, translation = _angles(b.R, b.t, scene)
    assert b.confident and rotation < 1 and translation < 5, (rotation, translation)
    mixed = verifier.verify_many([without, with_ratios, without], batch_size=2, workers=1)
    assert [v.weights for v in mixed] == [PRETRAINED_RATIO_FREE, PRETRAINED, PRETRAINED_RATIO_FREE]
    for v, single in zip(mixed, (b, a, b)):
        np.testing.assert_allclose(v.logits, single.logits, atol=1e-4)
    with pytest.raises(ValueError, match=r"^ratios, mutuals: missing; the shipped weights") as err:
        verifier.verify(**base, scales1=m.sizes[:, 0], scales2=m.sizes[:, 1])
    assert "scales1, scales2, angles1, angles2" in str(err.value)
    assert "\n" not in str(err.value)
    fixed = corrnet.Verifier(PRETRAINED_RATIO_FREE)
    assert not fixed.automatic and fixed.weight_files == (PRETRAINED_RATIO_FREE,)
    assert fixed.verify(**with_ratios).weights == PRETRAINED_RATIO_FREE


def test_pairs_mode_with_orb(scene, tmp_path, capsys):
    """corrnet match --pairs --detector orb: ORB features in features.h5, the scene's motion in
    poses.csv (ratio-free weights), the detector in inputs.json; a SIFT run does not resume it."""
    images = scene["tmp"]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("view1.png view2.png\n")
    intrinsics = tmp_path / "K.txt"
    intrinsics.write_text("".join(f"view{i}.png 500 500 319.5 239.5\n" for i in (1, 2)))
    out = tmp_path / "out"
    argv = ["--pairs", str(pairs), "--images", str(images), "--out", str(out), "--quiet"]
    argv += ["--intrinsics", str(intrinsics)]
    assert cm.main([*argv, "--detector", "orb"]) == 0
    with h5py.File(out / "features.h5", "r") as f:
        assert f["view1.png/descriptors"].dtype == np.uint8
    assert json.loads((out / "inputs.json").read_text())["detector"] == "orb"
    row = (out / "poses.csv").read_text().splitlines()[1].split(",")
    R = np.array(row[2:11], float).reshape(3, 3)
    rotation, translation = _angles(R, np.array(row[11:14], float), scene)
    assert rotation < 1 and translation < 5, (rotation, translation)
    capsys.readouterr()
    assert cm.main(argv) == 2  # SIFT asked: the ORB run is another run's output
    assert "holds a run of other inputs" in capsys.readouterr().err


def test_eval_raw_folder_passes_the_detector_to_its_preparation(raw, tmp_path, capsys):  # noqa: F811
    """corrnet eval --data RAW --detector orb prepares the folder with ORB into a cache file of
    its own (recording the detector) beside the SIFT one; with an HDF5 --data it is refused."""
    cache = tmp_path / "cache"

    def run(out: str, *extra: str) -> int:
        base = ["--cache", str(cache), "--methods", "ransac", "--workers", "1", "--quiet"]
        return call(eval_main, ["--data", str(raw), *base, "--out", str(tmp_path / out), *extra])

    assert run("a") == 0, capsys.readouterr().err
    (sift,) = cache.glob("*.hdf5")
    assert run("b", "--detector", "orb") == 0, capsys.readouterr().err
    (orb,) = set(cache.glob("*.hdf5")) - {sift}
    for path, detector in ((sift, "sift"), (orb, "orb")):
        with h5py.File(path, "r") as f:
            assert f.attrs[prep.DETECTOR_ATTR] == detector
            assert f.attrs[prep.PROTOCOL_ATTR] == prep.protocol(2000, detector)
    capsys.readouterr()
    code = call(
        eval_main,
        ["--data", str(orb), "--methods", "ransac", "--out", str(tmp_path / "c")]
        + ["--detector", "orb"],
    )
    refused(capsys, code, "corrnet eval: error:", "--detector: only with a raw folder")
