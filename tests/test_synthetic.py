"""Synthetic pairs: determinism, labels, realism of the geometry and side information."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from corrnet.commands.synthetic import main as synthetic_cli
from corrnet.datasets import OANetPairs
from corrnet.datasets.prepare import nearest_neighbours, sift_features
from corrnet.datasets.sample import to_pixels
from corrnet.datasets.synthetic import (
    SyntheticPairs,
    generate_pair,
    local_affine,
    local_similarity,
    write_synthetic,
)
from corrnet.geometry import INLIER_THRESHOLD, recover_pose, weighted_eight_point
from tests._data_reference import episym_np, ransac_pose_error, rotation_angle_deg

N = 1000


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return [generate_pair(7, i, "mixed", N) for i in range(40)]


def test_sample_contract(pairs):
    s = generate_pair(0, 3, "indoor", 300, side_info=True)
    shapes = {
        "xs": (300, 4),
        "ys": (300,),
        "labels": (300,),
        "R": (3, 3),
        "t": (3,),
        "ratios": (300,),
        "mutuals": (300,),
        "K1": (3, 3),
        "K2": (3, 3),
        "features": (300, 6),
        "sizes": (300, 2),
        "angles": (300, 2),
        "dists": (300, 2),
    }
    for key, shape in shapes.items():
        assert s[key].dtype == torch.float32 and tuple(s[key].shape) == shape, key
    assert s["index"].dtype == torch.int64 and int(s["index"]) == 3
    torch.testing.assert_close(
        s["features"], torch.cat([s["xs"], s["ratios"][:, None], s["mutuals"][:, None]], 1)
    )
    assert torch.equal(pairs[0]["features"], pairs[0]["xs"])
    assert set(s["mutuals"].unique().tolist()) <= {0.0, 1.0}
    R = s["R"].double()
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert abs(float(s["t"].norm()) - 1) < 1e-6
    assert "image1" not in s


def test_deterministic_by_seed_and_index():
    a, b = generate_pair(5, 11), generate_pair(5, 11)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["xs"], generate_pair(5, 12)["xs"])
    assert not torch.equal(a["xs"], generate_pair(6, 11)["xs"])
    data = SyntheticPairs(20, seed=5, mode="mixed", num_matches=2000)
    assert len(data) == 20 and torch.equal(data[11]["xs"], a["xs"])
    with pytest.raises(IndexError):
        data[20]
    with pytest.raises(ValueError, match="mode"):
        SyntheticPairs(3, mode="underwater")


def test_labels_match_float64_reference(pairs):
    for s in pairs:
        ref = episym_np(s["xs"].double().numpy(), s["R"].double().numpy(), s["t"].double().numpy())
        np.testing.assert_allclose(s["ys"].numpy(), ref, rtol=1e-3, atol=1e-9)
        # labels follow the stored distances, and agree with the reference off the threshold
        assert torch.equal(s["labels"], (s["ys"] < INLIER_THRESHOLD).float())
        clear = np.abs(ref - INLIER_THRESHOLD) > 1e-3 * INLIER_THRESHOLD
        np.testing.assert_array_equal(s["labels"].numpy()[clear], (ref < INLIER_THRESHOLD)[clear])


def test_inlier_ratio_covers_real_range(pairs):
    ratios = np.array([float(s["labels"].mean()) for s in pairs])
    assert ratios.min() >= 0.01 and ratios.max() <= 0.7
    assert ratios.min() < 0.08 and ratios.max() > 0.35
    assert 0.1 < np.median(ratios) < 0.4


def test_modes_differ():
    indoor = [generate_pair(1, i, "indoor", 200) for i in range(20)]
    outdoor = [generate_pair(1, i, "outdoor", 200) for i in range(20)]
    assert all(torch.equal(s["K1"], s["K2"]) for s in indoor)
    assert not any(torch.equal(s["K1"], s["K2"]) for s in outdoor)
    forward = lambda ss: np.median([abs(float(s["t"][2])) for s in ss])
    assert forward(indoor) > 0.8 > 0.5 > forward(outdoor)
    for s in indoor + outdoor:
        w, h = 2 * s["K1"][0, 2] + 1, 2 * s["K1"][1, 2] + 1
        assert 440 < min(w, h) and max(w, h) < 1070  # centre offset N(0, 5 px)
        assert 0.75 * w < s["K1"][0, 0] < 1.25 * w


def test_gt_inliers_recover_pose(pairs):
    ransac, eight = [], []
    for s in pairs:
        inl = s["labels"].bool()
        xs = s["xs"].double()[inl]
        ransac.append(ransac_pose_error(xs.numpy(), s["R"].numpy(), s["t"].numpy()))
        E = weighted_eight_point(s["xs"][None].double(), s["labels"][None].double())
        R, t, _ = recover_pose(E, s["xs"][None].double(), inl[None])
        cos_t = abs(float(t[0] @ s["t"].double()))
        eight.append(
            max(
                rotation_angle_deg(R[0].numpy(), s["R"].numpy()),
                np.degrees(np.arccos(min(cos_t, 1.0))),
            )
        )
    assert np.median(ransac) < 2 and np.mean(np.array(ransac) < 5) >= 0.9
    assert np.median(eight) < 2 and np.mean(np.array(eight) < 5) >= 0.9


def test_side_info_correlates_but_overlaps(pairs):
    inl = torch.cat([s["labels"] for s in pairs]).bool()
    ratios = torch.cat([s["ratios"] for s in pairs])
    mutuals = torch.cat([s["mutuals"] for s in pairs])
    assert ratios.min() >= 0 and ratios.max() <= 1
    assert ratios[inl].mean() + 0.1 < ratios[~inl].mean()
    assert mutuals[inl].mean() > mutuals[~inl].mean() + 0.2
    # overlapping: many inliers above 0.8 is unrealistic, but some are; many outliers below
    assert 0.02 < float((ratios[inl] > 0.8).float().mean()) < 0.4
    assert 0.05 < float((ratios[~inl] < 0.8).float().mean()) < 0.6


def test_hdf5_round_trip_equals_generator(tmp_path):
    out = tmp_path / "syn.hdf5"
    synthetic_cli(
        [
            "--out",
            str(out),
            "--pairs",
            "5",
            "--seed",
            "3",
            "--mode",
            "outdoor",
            "--num-matches",
            "500",
        ]
    )
    data = OANetPairs(out)
    assert len(data) == 5
    for i in range(5):
        got, ref = data[i], generate_pair(3, i, "outdoor", 500)
        assert set(got) == set(ref)
        for key in ref:
            assert torch.equal(got[key], ref[key]), key
    assert write_synthetic(tmp_path / "more.hdf5", 2, 3, "indoor", 100) == 2


def test_structure_of_real_nearest_neighbour_matches(pairs):
    """Duplicates and many-to-one image-2 points, and inliers that move like their neighbours."""
    dup, many, coherent = [], [], []
    for s in pairs:
        xs, inl = s["xs"].double().numpy(), s["labels"].bool().numpy()
        _, inv, counts = np.unique(xs, axis=0, return_inverse=True, return_counts=True)
        dup.append(np.mean(counts[inv.ravel()] > 1))
        _, inv2, counts2 = np.unique(xs[:, 2:], axis=0, return_inverse=True, return_counts=True)
        many.append(np.mean(counts2[inv2.ravel()] > 1))
        p, motion = xs[inl, :2], xs[inl, 2:] - xs[inl, :2]
        d = ((p[:, None] - p[None]) ** 2).sum(-1)
        d[d < 1e-18] = np.inf
        j = d.argmin(1)
        coherent.append(
            np.mean(
                (np.sqrt(d[np.arange(len(p)), j]) < 0.05)
                & (np.linalg.norm(motion - motion[j], axis=1) < 0.01)
            )
        )
    assert 0.005 < np.median(dup) < 0.3  # exact copies of true matches (a second SIFT orientation)
    assert 0.3 < np.median(many) < 0.8  # as measured on real pairs (benchmarks/data_stats.py)
    assert np.median(coherent) > 0.3  # piecewise-planar scenes: neighbours move alike


def test_scene_without_overlap_is_drawn_again(monkeypatch):
    """A scene whose cameras hardly overlap is replaced by the next draw, not an error in
    training."""
    import corrnet.datasets.synthetic as synthetic

    real, calls = synthetic._visible_points, []

    def first_fails(*args, **kwargs):
        calls.append(1)
        return None if len(calls) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_visible_points", first_fails)
    pair = synthetic.generate_pair(0, 7, "outdoor", 200)
    assert len(calls) == 2 and pair["xs"].shape == (200, 4) and torch.isfinite(pair["xs"]).all()


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + 180.0) % 360.0 - 180.0


def _jacobian_fd(H: np.ndarray, uv: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Jacobian (n, 2, 2) of uv -> π(H [uv, 1]) by central differences (float64)."""

    def f(p: np.ndarray) -> np.ndarray:
        q = np.c_[p, np.ones(len(p))] @ H.T
        return q[:, :2] / q[:, 2:]

    cols = [(f(uv + h * e) - f(uv - h * e)) / (2 * h) for e in np.eye(2)]
    return np.stack(cols, 2)


def test_local_similarity_against_finite_differences_and_opencv():
    """The closed form against central differences, and its angle convention against SIFT on a
    texture warped by a known rotation and zoom (cv2.KeyPoint.angle: angle2 - angle1)."""
    rng = np.random.default_rng(3)
    H = np.array([[1.2, 0.3, 20.0], [-0.25, 0.9, 5.0], [2e-4, -1e-4, 1.0]])
    uv = rng.uniform(0, 600, (50, 2))
    A = _jacobian_fd(H, uv)
    np.testing.assert_allclose(local_affine(H, uv), A, atol=1e-7)
    scale, turn = local_similarity(H, uv)
    np.testing.assert_allclose(scale, np.sqrt(np.abs(np.linalg.det(A))), rtol=1e-7)
    np.testing.assert_allclose(
        turn, np.degrees(np.arctan2(A[:, 1, 0] - A[:, 0, 1], A[:, 0, 0] + A[:, 1, 1])), atol=1e-6
    )
    noise = rng.uniform(0, 255, (60, 60, 3)).astype(np.uint8)
    image = cv2.GaussianBlur(
        cv2.resize(noise, (480, 480), interpolation=cv2.INTER_CUBIC), (0, 0), 1
    )
    for degrees, zoom in ((35.0, 1.0), (-70.0, 1.3)):
        H = np.vstack([cv2.getRotationMatrix2D((239.5, 239.5), degrees, zoom), [0, 0, 1]])
        f1, f2 = sift_features(image), sift_features(cv2.warpPerspective(image, H, (480, 480)))
        nn, ratio, mutual, _ = nearest_neighbours(f1.desc, f2.desc)
        p = np.c_[f1.kp, np.ones(len(f1.kp))] @ H.T
        true = (np.linalg.norm(f2.kp[nn] - p[:, :2], axis=1) < 1.5) & mutual & (ratio < 0.8)
        assert true.sum() > 50
        scale, turn = local_similarity(H, f1.kp[true])
        measured = _wrap(f2.angles[nn][true] - f1.angles[true])
        assert abs(np.median(_wrap(measured - turn))) < 1.0 and abs(turn[0] + degrees) < 1e-9
        log_scale = np.log(f2.sizes[nn][true] / f1.sizes[true])
        assert abs(np.median(log_scale - np.log(scale))) < 0.05


def test_sift_measurements_of_inliers_follow_the_plane_homography(monkeypatch):
    """One plane, no clutter: the homography fitted here (OpenCV, on the inliers' pixels) gives
    the local affine map whose scale and rotation the inliers' sizes and angles follow within
    SIFT's noise; outliers' spread as measured on real matches."""
    import corrnet.datasets.synthetic as synthetic

    monkeypatch.setattr(synthetic, "PLANES", (1, 1))
    monkeypatch.setattr(synthetic, "CLUTTER", 0.0)
    scale_res, turn_res, out_scale = [], [], []
    for i in range(6):
        s = synthetic.generate_pair(11, i, "mixed", 1500)
        inl = s["labels"].numpy() > 0.5
        xs, K1, K2 = (s[k].double().numpy() for k in ("xs", "K1", "K2"))
        uv1, uv2 = to_pixels(xs[:, :2], K1), to_pixels(xs[:, 2:], K2)
        H, _ = cv2.findHomography(uv1[inl], uv2[inl], cv2.LMEDS)
        p = np.c_[uv1, np.ones(len(uv1))] @ H.T
        # true matches: on the plane's homography (an outlier may pass the epipolar test)
        inl &= np.linalg.norm(p[:, :2] / p[:, 2:] - uv2, axis=1) < 4.0
        A = _jacobian_fd(H, uv1[inl])
        sizes, angles = s["sizes"].double().numpy(), s["angles"].double().numpy()
        log_scale = np.log(sizes[:, 1] / sizes[:, 0])
        scale_res.append(log_scale[inl] - 0.5 * np.log(np.abs(np.linalg.det(A))))
        turn = np.degrees(np.arctan2(A[:, 1, 0] - A[:, 0, 1], A[:, 0, 0] + A[:, 1, 1]))
        turn_res.append(_wrap(angles[inl, 1] - angles[inl, 0] - turn))
        out_scale.append(log_scale[~inl])
        dists, ratios = s["dists"].double().numpy(), s["ratios"].double().numpy()
        np.testing.assert_allclose(dists[:, 0], ratios * dists[:, 1], rtol=1e-5)
        assert (sizes > 0).all() and (angles >= 0).all() and (angles < 360).all()
    scale_res, turn_res = np.concatenate(scale_res), np.concatenate(turn_res)
    mad = lambda a: 1.4826 * np.median(np.abs(a - np.median(a)))
    assert abs(np.median(scale_res)) < 0.01 and abs(np.median(turn_res)) < 0.5
    assert 0.7 * synthetic.LOG_SCALE_NOISE < mad(scale_res) < 1.5 * synthetic.LOG_SCALE_NOISE
    assert 0.7 * synthetic.ANGLE_NOISE < mad(turn_res) < 1.5 * synthetic.ANGLE_NOISE
    # outliers: the measured real spread of log(size2 / size1), 25-75 % at -0.30 / 0.32
    q25, q75 = np.percentile(np.concatenate(out_scale), [25, 75])
    assert -0.5 < q25 < -0.15 and 0.15 < q75 < 0.5
