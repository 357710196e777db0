"""Preparation from real images (real-dev): labels, poses, resuming and atomic output.

real-dev is looked up beside the repository (``../shared/real-dev``), as in CI; the tests skip
where it is absent (a user's clone).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import cv2
import h5py
import numpy as np
import pytest

import corrnet.datasets.prepare as prep
from corrnet.commands.prepare import main as prepare_cli
from corrnet.datasets import OANetPairs
from corrnet.datasets.oanet_hdf5 import SIFT_KEYS
from tests._data_reference import episym_np, ransac_pose_error
from tests.conftest import SHARED

REAL_DEV = SHARED / "real-dev"
CHOSEN = {"lund_door": [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)], "entry_P10": [(0, 1), (1, 2)]}


def _camera(seq: str, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Absolute K, world-to-camera R, T of image k, read here straight from the files."""
    root = REAL_DEV / seq / "test"
    name = (root / "calibration.txt").read_text().split()[k]
    with h5py.File(root / name, "r") as f:
        K, R, T, (w, h) = f["K"][()], f["R"][()], f["T"][()].ravel(), f["imsize"][()].ravel()
    K_abs = np.array(
        [[K[0, 0], 0, (w - 1) / 2 + K[0, 2]], [0, K[1, 1], (h - 1) / 2 + K[1, 2]], [0, 0, 1]]
    )
    return K_abs, R, T


def _gt(seq: str, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    (_, Ri, Ti), (_, Rj, Tj) = _camera(seq, i), _camera(seq, j)
    R = Rj @ Ri.T
    t = Tj - R @ Ti
    return R, t / np.linalg.norm(t)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, real_dev) -> dict:
    """The chosen pairs through the CLI, via a JSON pairs file, with two workers."""
    tmp = tmp_path_factory.mktemp("prepare")
    specs = [
        s
        for seq, pairs in CHOSEN.items()
        for s in prep.read_sequence(real_dev / seq)
        if tuple(map(int, s.key.split("/")[1].split("-"))) in pairs
    ]
    entries = [
        {
            "name": s.key,
            "image1": str(s.image1),
            "image2": str(s.image2),
            "K1": s.K1.tolist(),
            "K2": s.K2.tolist(),
            "R": s.R.tolist(),
            "t": s.t.tolist(),
        }
        for s in specs
    ]
    (tmp / "pairs.json").write_text(json.dumps(entries))
    out = tmp / "dev.hdf5"
    prepare_cli(
        [
            "--pairs-file",
            str(tmp / "pairs.json"),
            "--out",
            str(out),
            "--workers",
            "2",
            "--keep-cache",
        ]
    )
    return {
        "specs": specs,
        "out": out,
        "json": tmp / "pairs.json",
        "data": OANetPairs(out, side_info=True),
    }


def test_pairs_file_and_raw_layout_agree(prepared):
    specs = prepared["specs"]
    assert [s.key for s in specs] == [f"{q}/{i}-{j}" for q, ps in CHOSEN.items() for i, j in ps]
    for a, b in zip(specs, prep.read_pairs_file(prepared["json"])):
        assert (a.key, a.image1, a.image2) == (b.key, b.image1, b.image2)
        for key in ("K1", "K2", "R", "t"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    for s in specs:
        seq, (i, j) = s.key.split("/")[0], map(int, s.key.split("/")[1].split("-"))
        np.testing.assert_allclose(s.K1, _camera(seq, i)[0], rtol=1e-12)
        R, t = _gt(seq, i, j)
        np.testing.assert_allclose(s.R, R, atol=1e-12)
        np.testing.assert_allclose(s.t / np.linalg.norm(s.t), t, atol=1e-12)


def test_samples_have_images_and_gt(prepared):
    data = prepared["data"]
    assert len(data) == len(prepared["specs"])
    for s, spec in zip(data, prepared["specs"]):
        assert s["xs"].shape == (2000, 4) and s["features"].shape == (2000, 6)
        assert s["image1"] == str(spec.image1) and s["image2"] == str(spec.image2)
        np.testing.assert_allclose(s["K2"].numpy(), spec.K2, rtol=1e-6)


def test_matches_agree_with_opencv_matcher(prepared):
    """SIFT + cv2.BFMatcher computed here agree with the stored matches of one pair."""
    spec, s = prepared["specs"][-1], prepared["data"][len(prepared["specs"]) - 1]
    sift = cv2.SIFT_create(nfeatures=2000, contrastThreshold=1e-5)
    (k1, d1), (k2, d2) = (
        sift.detectAndCompute(cv2.imread(str(p)), None) for p in (spec.image1, spec.image2)
    )
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d1[:2000], d2[:2000], k=2)
    back = {m.queryIdx: m.trainIdx for m in cv2.BFMatcher(cv2.NORM_L2).match(d2[:2000], d1[:2000])}
    uv1 = np.array([k.pt for k in k1[:2000]])
    uv2 = np.array([k2[m[0].trainIdx].pt for m in knn])
    K1, K2 = spec.K1, spec.K2
    xs = np.c_[(uv1 - K1[:2, 2]) / K1[[0, 1], [0, 1]], (uv2 - K2[:2, 2]) / K2[[0, 1], [0, 1]]]
    same = np.abs(xs - s["xs"].numpy()).max(1) < 1e-5
    assert same.mean() > 0.99
    ratio = np.array([m[0].distance / m[1].distance for m in knn])
    np.testing.assert_allclose(s["ratios"].numpy()[same], ratio[same], atol=1e-4)
    mutual = np.array([back[m[0].trainIdx] == q for q, m in enumerate(knn)])
    assert (s["mutuals"].numpy()[same] == mutual[same]).mean() > 0.99


def test_sift_measurements_agree_with_opencv_and_a_float64_reference(prepared):
    """sizes / angles are cv2.KeyPoint.size / .angle of both keypoints of every match; dists the
    nearest and second-nearest descriptor distances, recomputed here by brute force in float64."""
    spec, s = prepared["specs"][0], prepared["data"][0]
    sift = cv2.SIFT_create(nfeatures=2000, contrastThreshold=1e-5)
    (k1, d1), (k2, d2) = (
        sift.detectAndCompute(cv2.imread(str(p)), None) for p in (spec.image1, spec.image2)
    )
    k1, k2, d1, d2 = k1[:2000], k2[:2000], d1[:2000].astype(np.float64), d2[:2000]
    D = np.sqrt(((d1[:, None, :] - d2[None, :, :].astype(np.float64)) ** 2).sum(-1))
    two = np.sort(D, 1)[:, :2]
    nn = D.argmin(1)
    clear = two[:, 1] - two[:, 0] > 1e-3  # the nearest neighbour is unambiguous
    assert clear.mean() > 0.99
    np.testing.assert_allclose(s["dists"].numpy(), two, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(s["ratios"].numpy(), two[:, 0] / two[:, 1], atol=1e-5)
    for col, kps in ((0, k1), (1, [k2[j] for j in nn])):
        for key, attr in (("sizes", "size"), ("angles", "angle")):
            ref = np.array([getattr(k, attr) for k in kps], np.float32)
            np.testing.assert_array_equal(s[key].numpy()[clear, col], ref[clear], f"{key}[{col}]")
    assert s["sizes"].min() > 0 and 0 <= s["angles"].min() and s["angles"].max() < 360


def test_num_features_is_part_of_the_protocol(prepared, tmp_path, capsys):
    """The keypoint count is recorded in the file and keys the caches and the inputs digest, so
    preparations with 500 and 2000 keypoints never share a cache entry or an output."""
    spec = prepared["specs"][0]
    assert prep._feature_cache_name(spec.image1, 500) != prep._feature_cache_name(spec.image1)
    assert prep._pair_cache_name(spec, 500) != prep._pair_cache_name(spec, 2000)
    assert prep.inputs_digest([spec], 500) != prep.inputs_digest([spec])
    out = tmp_path / "small.hdf5"
    # the 2000-keypoint cache of the module's run beside this output: none of it may be reused
    shutil.copytree(prep.cache_dir_for(prepared["out"]), prep.cache_dir_for(out))
    before = {p.name for p in prep.cache_dir_for(out).rglob("*.npz")}
    pairs = tmp_path / "one.json"
    pairs.write_text(json.dumps(json.loads(prepared["json"].read_text())[:1]))
    args = ["--pairs-file", str(pairs), "--out", str(out), "--workers", "1"]
    assert prepare_cli([*args, "--num-features", "500", "--keep-cache"]) == 0
    made = {p.name for p in prep.cache_dir_for(out).rglob("*.npz")} - before
    assert len(made) == 3  # two images' features and one pair, all new
    with h5py.File(out, "r") as f:
        assert f.attrs[prep.PROTOCOL_ATTR] == prep.protocol(500)
        assert f.attrs[prep.NUM_FEATURES_ATTR] == 500 and "sift=500 " in prep.protocol(500)
    small = OANetPairs(out)[0]
    assert 8 <= len(small["xs"]) <= 500 and small["sizes"].shape == (len(small["xs"]), 2)
    capsys.readouterr()
    assert prepare_cli(args) == 2  # the other count does not reuse (or replace) the output
    assert "made by another preparation protocol" in capsys.readouterr().err
    with h5py.File(prepared["out"], "r") as f:
        assert f.attrs[prep.PROTOCOL_ATTR] == prep.protocol() == prep.protocol(prep.NUM_FEATURES)
        assert f.attrs[prep.NUM_FEATURES_ATTR] == 2000


def test_labels_and_inlier_ratio(prepared):
    ratios: dict[str, list[float]] = {}
    for s, spec in zip(prepared["data"], prepared["specs"]):
        seq, (i, j) = spec.key.split("/")[0], map(int, spec.key.split("/")[1].split("-"))
        ref = episym_np(s["xs"].double().numpy(), *_gt(seq, i, j))
        np.testing.assert_allclose(s["ys"].numpy(), ref, rtol=1e-4, atol=1e-10)
        clear = np.abs(ref - 1e-4) > 1e-6
        np.testing.assert_array_equal(s["labels"].numpy()[clear], (ref < 1e-4)[clear])
        ratios.setdefault(seq, []).append(float(s["labels"].mean()))
    # neighbouring views; whole-sequence means in docs/data.md: lund_door 57.6 %, entry_P10 30.2 %
    assert 0.45 < np.mean(ratios["lund_door"]) < 0.85
    assert 0.3 < np.mean(ratios["entry_P10"]) < 0.7


def test_gt_inliers_recover_pose(prepared):
    errors = []
    for s in prepared["data"]:
        inl = s["labels"].numpy().astype(bool)
        errors.append(
            ransac_pose_error(s["xs"].double().numpy()[inl], s["R"].numpy(), s["t"].numpy())
        )
    assert np.mean(np.array(errors) < 5) >= 0.85 and np.median(errors) < 2


def test_interrupted_run_resumes_and_rerun_skips(prepared, tmp_path, monkeypatch):
    specs = prepared["specs"][:3]
    out = tmp_path / "part.hdf5"
    features = prep.cache_dir_for(prepared["out"]) / "features"
    shutil.copytree(features, prep.cache_dir_for(out) / "features")
    calls = {"sift": 0, "match": 0}
    real_match, real_extract = prep.match_pair, prep.extract_features

    def counting_match(*args, stop_at: int | None = None):
        calls["match"] += 1
        if calls["match"] == stop_at:
            raise KeyboardInterrupt
        return real_match(*args)

    def counting_extract(image, num_features, detector):
        calls["sift"] += 1
        return real_extract(image, num_features, detector)

    monkeypatch.setattr(prep, "extract_features", counting_extract)
    monkeypatch.setattr(prep, "match_pair", lambda *a: counting_match(*a, stop_at=3))
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(specs, out, workers=1)
    assert not out.exists() and calls == {"sift": 0, "match": 3}
    assert len(list((prep.cache_dir_for(out) / "pairs").glob("*.npz"))) == 2
    monkeypatch.setattr(prep, "match_pair", counting_match)
    assert prep.prepare(specs, out, workers=1) == 3
    assert calls == {"sift": 0, "match": 4} and not prep.cache_dir_for(out).exists()
    assert prep.prepare(specs, out, workers=1) == 3 and calls["match"] == 4
    data = OANetPairs(out)
    for k in range(3):
        for key in ("xs", "ys", "ratios", "mutuals", "R", "t", "K1", "K2", *SIFT_KEYS):
            assert (data[k][key] == prepared["data"][k][key]).all(), key
    with np.load(next((prep.cache_dir_for(prepared["out"]) / "features").glob("*.npz"))) as z:
        assert sorted(z.files) == sorted(prep.Features._fields)  # the cache keeps sizes, angles


def test_pair_selection_and_small_translation(tmp_path, real_dev):
    specs = prep.read_sequence(real_dev / "entry_P10")
    a, b = prep.select_pairs(specs, 5, seed=3), prep.select_pairs(specs, 5, seed=3)
    assert [s.key for s in a] == [s.key for s in b] and len(a) == 5
    assert [s.key for s in a] == [s.key for s in specs if s in a]
    assert prep.select_pairs(specs, None, 0) == specs
    still = prep.PairSpec(
        "still", specs[0].image1, specs[0].image2, specs[0].K1, specs[0].K2, specs[0].R, np.zeros(3)
    )
    # the cached matches of a pair follow its inputs, not only its name
    assert prep._pair_cache_name(specs[0]) == prep._pair_cache_name(dataclasses.replace(specs[0]))
    assert prep._pair_cache_name(specs[0]) != prep._pair_cache_name(
        dataclasses.replace(specs[0], t=2 * specs[0].t)
    )
    with pytest.warns(UserWarning, match=r"dropped 1 pair\(s\) with \|t\| < 1e-05"):
        assert prep.prepare([still], tmp_path / "still.hdf5", workers=1) == 0


def test_bad_raw_input(tmp_path, real_dev):
    seq = tmp_path / "broken" / "test"
    seq.mkdir(parents=True)
    src = real_dev / "entry_P10" / "test"
    for name in ("images.txt", "calibration.txt"):
        shutil.copy(src / name, seq / name)
    (seq / "pairs.txt").write_text("0 1\n0 x\n")
    with pytest.raises(ValueError, match=r"pairs.txt: line 2: expected 'i j', got '0 x'"):
        prep.read_sequence(seq.parent)
    (seq / "pairs.txt").write_text("0 10\n")
    with pytest.raises(ValueError, match=r"pairs.txt: line 1: index outside 0..9"):
        prep.read_sequence(seq.parent)
    (seq / "pairs.txt").write_text("0 1\n")
    with pytest.raises(FileNotFoundError, match=r"calibration_0000.h5: calibration file not found"):
        prep.read_sequence(seq.parent)
    with pytest.raises(FileNotFoundError, match="no sequence folders"):
        prep.find_sequences(seq)  # broken/test holds no <seq>/test/images.txt, nor test/images.txt
    assert prep.find_sequences(tmp_path) == [seq.parent]
    assert prep.find_sequences(seq.parent) == [seq.parent]  # one sequence folder itself
    (tmp_path / "p.json").write_text(
        json.dumps([{"image1": "a.jpg", "image2": "b.jpg", "K1": np.eye(3).tolist()}])
    )
    with pytest.raises(ValueError, match=r"p.json: pair 0: missing key\(s\) \['K2', 'R', 't'\]"):
        prep.read_pairs_file(tmp_path / "p.json")
    entry = {
        "image1": "a.jpg",
        "image2": "b.jpg",
        "K1": np.eye(3).tolist(),
        "K2": np.eye(3).tolist(),
        "R": np.eye(3).tolist(),
        "t": [1, 0, "x"],
    }
    (tmp_path / "p.json").write_text(json.dumps([entry]))
    with pytest.raises(
        ValueError, match=r"p.json: pair 0: t: expected finite numbers of shape \(3,\)"
    ):
        prep.read_pairs_file(tmp_path / "p.json")
    (tmp_path / "p.json").write_text(json.dumps([entry | {"t": [1, 0]}]))
    with pytest.raises(ValueError, match=r"p.json: pair 0: t: .* got shape \(2,\)"):
        prep.read_pairs_file(tmp_path / "p.json")
    (tmp_path / "p.json").write_text(json.dumps([["a.jpg", "b.jpg"]]))
    with pytest.raises(ValueError, match=r"p.json: pair 0: expected an object, got list"):
        prep.read_pairs_file(tmp_path / "p.json")
