"""Robust estimators (PoseLib, OpenCV) and the pose without RANSAC (IRLS eight-point, predict)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from corrnet.constants import ESTIMATOR_NAMES
from corrnet.datasets.sample import to_pixels
from corrnet.eval import estimators
from corrnet.eval.estimators import (
    ESTIMATORS,
    MIN_MATCHES,
    SEED,
    PoseLibEstimator,
    estimate_pose,
    make_estimators,
    pinhole,
)
from corrnet.eval.predict import FALLBACK_TOP_K, kept_matches, predict
from corrnet.geometry import essential_from_pose, pose_errors, recover_pose, sampson_distance
from corrnet.geometry.robust import KERNELS, robust_eight_point

K1 = np.array([[800.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])  # fx != fy
K2 = np.array([[500.0, 0.0, 300.0], [0.0, 1000.0, 250.0], [0.0, 0.0, 1.0]])


def scene(seed: int, n: int = 400, inliers: int = 200, noise_px: float = 0.0):
    """Matches x (n, 4) normalised for X₂ = R X₁ + t: ``inliers`` exact (or noisy, pixels)
    ones first, then image-2 points uniform over a 640 x 480 image.  Returns x, R, t, labels."""
    rng = np.random.default_rng(seed)
    R = cv2.Rodrigues(rng.normal(size=3) * 0.15)[0]
    t = np.array([1.0, rng.normal(0, 0.2), rng.normal(0, 0.2)])
    t /= np.linalg.norm(t)
    X1 = rng.uniform(-2, 2, (n, 3)) + [0, 0, 8]
    X2 = X1 @ R.T + t
    u1 = to_pixels(X1[:, :2] / X1[:, 2:], K1)
    u2 = to_pixels(X2[:, :2] / X2[:, 2:], K2)
    u1[:inliers] += rng.normal(0, noise_px, (inliers, 2))
    u2[:inliers] += rng.normal(0, noise_px, (inliers, 2))
    u2[inliers:] = rng.uniform(0, 1, (n - inliers, 2)) * [640, 480]
    x = np.concatenate([(u1 - K1[:2, 2]) / np.diag(K1)[:2], (u2 - K2[:2, 2]) / np.diag(K2)[:2]], 1)
    return x, R, t, np.arange(n) < inliers


def angle_errors(R: np.ndarray, t: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray) -> float:
    err_R, err_t = pose_errors(
        torch.as_tensor(R), torch.as_tensor(t), torch.as_tensor(R_gt), torch.as_tensor(t_gt)
    )
    return max(float(err_R), float(err_t))


def test_to_pixels_is_K_times_homogeneous_point():
    x = np.random.default_rng(0).normal(size=(7, 2))
    expected = (np.c_[x, np.ones(7)] @ K1.T)[:, :2]
    assert np.allclose(to_pixels(x, K1), expected)
    assert pinhole(K1).params == pytest.approx([800.0, 400.0, 320.0, 240.0])


def test_poselib_recovers_known_pose_with_half_outliers_in_our_convention():
    x, R, t, _ = scene(0)
    R_est, t_est, inliers = estimate_pose(x, "poselib", K1=K1, K2=K2)
    assert angle_errors(R_est, t_est, R, t) < 0.1
    # X₂ = R X₁ + t as corrnet: the same R, and t with the same sign (pose_errors ignores it)
    assert np.abs(R_est - R).max() < 1e-3 and float(t_est @ t) > 0.9999
    assert inliers[:200].all() and inliers[200:].mean() < 0.05


def test_poselib_threshold_is_pixels_through_the_mean_focal_length():
    """PoseLib tests the normalised Sampson distance against max_epipolar_error / f̄, with f̄
    the mean of (fx + fy) / 2 of the two cameras (here fx != fy in both)."""
    x, R, t, _ = scene(1, n=400, inliers=400)
    rng = np.random.default_rng(1)
    u2 = to_pixels(x[:, 2:], K2)
    d, a = rng.uniform(0, 12, 200), rng.uniform(0, 2 * np.pi, 200)
    u2[200:] += np.c_[d * np.cos(a), d * np.sin(a)]  # displaced by 0-12 px
    x[:, 2:] = (u2 - K2[:2, 2]) / np.diag(K2)[:2]
    E = essential_from_pose(torch.as_tensor(R), torch.as_tensor(t))
    f_mean = (K1[0, 0] + K1[1, 1] + K2[0, 0] + K2[1, 1]) / 4
    error = np.sqrt(sampson_distance(torch.as_tensor(x), E).numpy()) * f_mean
    for px in (1.0, 2.0):
        _, _, inliers = PoseLibEstimator(max_epipolar_error=px).estimate(x, K1, K2)
        clear = np.abs(error - px) > 0.25 * px  # its pose is refined on 0-px inliers too
        assert np.array_equal(inliers[clear], error[clear] < px), px
        assert 30 < (inliers[200:]).sum() < 170  # the displaced matches straddle the threshold


def test_poselib_same_pair_same_result():
    x, *_ = scene(2, n=300, inliers=60, noise_px=1.0)
    runs = [estimate_pose(x, "poselib", K1=K1, K2=K2) for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    assert np.isfinite(runs[0][0]).all()


@pytest.mark.parametrize("m", [0, 3, MIN_MATCHES - 1, MIN_MATCHES])
def test_every_estimator_fails_cleanly_on_too_few_matches(m):
    x, *_ = scene(3, n=max(m, 1), inliers=0)
    for name in ESTIMATORS:
        R, t, inliers = estimate_pose(x[:m], name, K1=K1, K2=K2)
        assert inliers.shape == (m,)
        if m < MIN_MATCHES or not np.isfinite(R).all():
            assert np.isnan(R).all() and np.isnan(t).all()
            assert angle_errors(R, t, np.eye(3), np.array([1.0, 0, 0])) == 180.0


def test_an_opencv_error_scores_as_a_failed_pair(monkeypatch):
    """An assertion inside cv2.findEssentialMat (OpenCV 5.1's solvePoly on exact matches) is a
    failed pair (NaN pose, no inliers), not an exception that stops the evaluation."""

    def raise_cv2_error(*args, **kwargs):
        raise cv2.error("solvePoly")

    monkeypatch.setattr(estimators.cv2, "findEssentialMat", raise_cv2_error)
    x, *_ = scene(4, n=100, inliers=60)
    for name in ("ransac", "magsac"):
        R, t, inliers = estimate_pose(x, name)
        assert (
            np.isnan(R).all()
            and np.isnan(t).all()
            and inliers.shape == (100,)
            and not inliers.any()
        )


def test_registry_names_and_poselib_needs_intrinsics():
    assert set(ESTIMATORS) >= {"ransac", "magsac", "poselib"}
    assert tuple(ESTIMATORS) == ESTIMATOR_NAMES  # the names `corrnet eval --methods` offers
    assert all(est.name == name for name, est in ESTIMATORS.items())
    with pytest.raises(ValueError, match="K1 and K2"):
        estimate_pose(np.zeros((10, 4)), "poselib")
    with pytest.raises(ValueError, match="estimator"):
        estimate_pose(np.zeros((10, 4)), "gc-ransac")
    with pytest.raises(ValueError, match="pixels"):
        PoseLibEstimator(max_epipolar_error=0.0)


def test_every_estimator_seeds_its_sampler_with_its_seed(monkeypatch):
    """make_estimators(seed) hands the seed to cv2.setRNGSeed and to PoseLib's options before
    each estimate; the default registry uses SEED; a seed outside [0, 2^31) is refused; PROSAC
    (``progressive``) reaches PoseLib's options, off by default."""
    seen = []
    real_poselib, real_cv2 = estimators.poselib.estimate_relative_pose, estimators.cv2.setRNGSeed
    monkeypatch.setattr(
        estimators.cv2, "setRNGSeed", lambda s: (seen.append(("cv2", s)), real_cv2(s))
    )
    monkeypatch.setattr(
        estimators.poselib,
        "estimate_relative_pose",
        lambda *a: (seen.append(("poselib", a[4]["seed"])), real_poselib(*a))[1],
    )
    x, R, t, _ = scene(5, n=100, inliers=60)
    for seed in (7, SEED):
        chosen = make_estimators(seed) if seed != SEED else ESTIMATORS
        for name in ("ransac", "magsac", "poselib"):
            seen.clear()
            _, _, inliers = chosen[name].estimate(x, K1, K2)
            assert (
                seen == [("poselib" if name == "poselib" else "cv2", seed)] and inliers.sum() >= 60
            )
    assert make_estimators(9, poselib_threshold=2.5)["poselib"].max_epipolar_error == 2.5
    monkeypatch.setattr(
        estimators.poselib,
        "estimate_relative_pose",
        lambda *a: (seen.append(a[4]["progressive_sampling"]), real_poselib(*a))[1],
    )
    for progressive in (False, True):
        seen.clear()
        assert PoseLibEstimator(progressive=progressive).estimate(x, K1, K2)[2].sum() >= 60
        assert seen == [progressive]
    for bad in (-1, 2**31):
        with pytest.raises(ValueError, match="seed"):
            make_estimators(bad)


# ------------------------------------------------------------------ robust eight-point (IRLS)
def contaminated(seed: int, n_in: int = 60, n_out: int = 60, noise: float = 1e-4):
    """Inliers (weight 1, noise std ``noise`` normalised) and outliers with weight 0.5."""
    x, R, t, labels = scene(seed, n=n_in + n_out, inliers=n_in)
    x[:n_in] += np.random.default_rng(seed).normal(0, noise, (n_in, 4))
    w = np.where(labels, 1.0, 0.5)
    return torch.as_tensor(x)[None], torch.as_tensor(w)[None], R, t


def test_irls_recovers_a_pose_where_plain_weighted_eight_point_fails():
    for seed in range(3):
        x, w, R, t = contaminated(10 + seed)
        plain = robust_eight_point(x, w, iterations=0, starts=(None,))
        robust = robust_eight_point(x, w)
        errors = [
            angle_errors(*(a[0].numpy() for a in recover_pose(fit.E, x, fit.inliers)[:2]), R, t)
            for fit in (plain, robust)
        ]
        assert errors[0] > 10 and errors[1] < 1.0, (seed, errors)
        assert (
            robust.inliers[0, :60].float().mean() > 0.9
            and robust.inliers[0, 60:].float().mean() < 0.1
        )


@pytest.mark.parametrize("kernel", KERNELS)
def test_robust_cost_never_increases_at_each_scale(kernel):
    """At each scale s, C_s(E) = Σᵢ wᵢ ρ(dᵢ / s²) of the accepted IRLS iterates is
    non-increasing, and so is C_s at the finest scale along the Levenberg-Marquardt steps
    (across scales the cost is not comparable: s changes).  The last cost is checked against
    an independent float64 evaluation of C_s at the returned E."""
    (xa, wa, *_), (xb, wb, *_) = contaminated(20), contaminated(21)
    x, w = torch.cat([xa, xb]), torch.cat([wa, wb])
    scales = (1e-2, 3e-3, 1e-3)
    fit = robust_eight_point(x, w, scales, kernel, iterations=6, refine_steps=8)
    assert fit.costs.shape == (2, 3, 7) and fit.refine_costs.shape == (2, 9)
    assert (fit.costs.diff(dim=-1) <= 0).all() and (fit.refine_costs.diff(dim=-1) <= 0).all()
    assert (fit.costs[..., -1] < fit.costs[..., 0]).any()  # the iterations did something
    assert (fit.refine_costs[:, -1] < fit.refine_costs[:, 0]).all()
    u = sampson_distance(x, fit.E) / scales[-1] ** 2
    rho = {
        "cauchy": torch.log1p(u),
        "geman-mcclure": u / (1 + u),
        "tukey": (1 - (1 - u).clamp_min(0) ** 3) / 3,
    }[kernel]
    assert torch.allclose((w * rho).sum(-1), fit.refine_costs[:, -1], rtol=1e-6)
    sv = torch.linalg.svdvals(fit.E)
    assert torch.allclose(sv[:, 0], sv[:, 1]) and (sv[:, 2] < 1e-12).all()


@pytest.mark.parametrize("positive", [0, 3, 7])
def test_irls_is_finite_with_fewer_than_eight_positive_weights(positive):
    x, _, _, _ = contaminated(30, n_in=40, n_out=10)
    w = torch.zeros(1, 50, dtype=torch.float64)
    w[0, :positive] = 1.0
    fit = robust_eight_point(x, w)
    assert all(torch.isfinite(v).all() for v in fit)
    out = predict(torch.full((1, 50), -3.0), x)
    assert out.kept.sum() == FALLBACK_TOP_K
    assert all(torch.isfinite(v).all() for v in (out.E, out.R, out.t, out.weights))


def test_predict_is_batched_respects_the_mask_and_matches_the_plain_eight_point():
    x1, w1, R1, t1 = contaminated(40, n_in=80, n_out=20)
    x2, w2, R2, t2 = contaminated(41, n_in=80, n_out=20)
    xs, logits = torch.cat([x1, x2]), torch.where(torch.cat([w1, w2]) == 1.0, 3.0, -3.0)
    mask = torch.ones(2, 100, dtype=torch.bool)
    mask[1, :5] = False
    out = predict(logits, xs, mask)
    assert out.R.shape == (2, 3, 3) and out.t.shape == (2, 3) and out.E.shape == (2, 3, 3)
    assert not out.kept[1, :5].any() and out.kept[0, :80].all() and not out.kept[:, 80:].any()
    for b, (R, t) in enumerate(((R1, t1), (R2, t2))):
        assert angle_errors(out.R[b].numpy(), out.t[b].numpy(), R, t) < 1.0
    plain = predict(logits, xs, mask, robust=False)
    assert torch.equal(plain.inliers, plain.kept)
    assert np.allclose(kept_matches(logits, mask).numpy(), out.kept.numpy())
    with pytest.raises(ValueError, match="logits, xs"):
        predict(logits[:, :50], xs)


def test_corrnet_8pt_is_the_networks_own_eight_point():
    """predict(robust=False) with CorrNet's ``weights`` reproduces the pose of its own E."""
    from corrnet.checkpoint import load_model
    from corrnet.datasets import generate_pair

    model = load_model(None)
    s = generate_pair(0, 3, num_matches=500, side_info=model.config.side_info)
    with torch.inference_mode():
        out = model(s["features"][None])
    plain = predict(out["logits"], s["xs"][None], weights=out["weights"], robust=False)
    R, t, _ = recover_pose(out["E"].double(), s["xs"][None].double(), plain.kept)
    assert torch.allclose(plain.R, R, atol=1e-4) and torch.allclose(plain.t, t, atol=1e-4)
    with pytest.raises(ValueError, match="weights"):
        predict(out["logits"], s["xs"][None], weights=out["weights"][:, :10])


def test_predict_of_a_pair_does_not_depend_on_its_batch():
    """predict pads each pair's kept matches to the batch's largest count; the padding slots take
    no part (not even the eight-point floor's vote), so a pair solved in a batch gets the E it
    gets alone.  Checked before the Levenberg-Marquardt steps, which amplify float noise."""
    from tests.conftest import make_problem

    p = make_problem(batch=2, n=120, seed=4, outliers=60)
    g = torch.Generator().manual_seed(2)
    x = p["x"] + 2e-3 * torch.randn(p["x"].shape, generator=g, dtype=torch.float64)
    logits = torch.where(p["labels"], 1.0, -1.0) + 0.5 * torch.randn(
        2, 120, generator=g, dtype=torch.float64
    )
    logits[1, 20:] = -5.0  # pair 1 keeps far fewer matches than pair 0
    batched = predict(logits, x, refine_steps=0)
    assert batched.kept[0].sum() > 2 * batched.kept[1].sum() >= 2 * FALLBACK_TOP_K
    for b in range(2):
        alone = predict(logits[b : b + 1], x[b : b + 1], refine_steps=0)
        cos = (batched.E[b].flatten() * alone.E[0].flatten()).sum().abs()
        assert cos > 1 - 1e-12, b
