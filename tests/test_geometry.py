"""Geometry core against independent references: closed forms, float64 numpy, OpenCV."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from corrnet.geometry import (
    INLIER_THRESHOLD,
    WEIGHT_FLOOR,
    essential_from_pose,
    normalize_keypoints,
    pixel_sampson_distance,
    pose_errors,
    recover_pose,
    sampson_distance,
    skew,
    symmetric_epipolar_distance,
    weighted_eight_point,
)
from corrnet.geometry.epipolar import epipolar_terms
from tests.conftest import make_problem, rotation


def test_skew_is_cross_product():
    g = torch.Generator().manual_seed(1)
    v, u = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(
        skew(v) @ u.unsqueeze(-1), torch.linalg.cross(v, u).unsqueeze(-1), atol=1e-14
    )


def test_skew_without_validation_is_the_same_matrix_and_passes_nan_through():
    v = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(skew(v, validate=False), skew(v))
    v[0, 1, 2] = float("nan")
    assert skew(v, validate=False)[0, 1].isnan().sum() == 2
    with pytest.raises(ValueError, match="^v"):
        skew(v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_epipolar_terms_broadcast_one_E_over_a_batch_in_the_input_dtype(dtype):
    """r = x2ᵀE x1, E x1 and Eᵀ x2 (first two entries) against matmuls, one (3, 3) E for
    (B, N, 4) matches, and per-pair E (B, 3, 3)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 20, 4, generator=g, dtype=torch.float64)
    Es = torch.randn(3, 3, 3, generator=g, dtype=torch.float64)
    h1 = torch.cat([x[..., :2], torch.ones_like(x[..., :1])], -1)
    h2 = torch.cat([x[..., 2:], torch.ones_like(x[..., :1])], -1)
    for E, E_b in ((Es[0], Es[:1]), (Es, Es)):
        r, (a0, a1), (b0, b1) = epipolar_terms(x.to(dtype), E.to(dtype))
        line2, line1 = h1 @ E_b.transpose(-1, -2), h2 @ E_b
        assert r.dtype == dtype and r.shape == a0.shape == b1.shape == (3, 20)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(r.double(), (h2 * line2).sum(-1), **tol)
        torch.testing.assert_close(torch.stack([a0, a1], -1).double(), line2[..., :2], **tol)
        torch.testing.assert_close(torch.stack([b0, b1], -1).double(), line1[..., :2], **tol)


def test_essential_matrix_satisfies_epipolar_constraint(problem):
    E = essential_from_pose(problem["R"], problem["t"])
    x = problem["x"]
    x1 = torch.cat([x[..., :2], torch.ones_like(x[..., :1])], -1)
    x2 = torch.cat([x[..., 2:], torch.ones_like(x[..., :1])], -1)
    residual = torch.einsum("bni,bij,bnj->bn", x2, E, x1)
    assert residual.abs().max() < 1e-12
    E_bad = essential_from_pose(
        problem["R"] @ rotation(torch.tensor([0.0, 0.05, 0.0], dtype=torch.float64)), problem["t"]
    )
    assert torch.einsum("bni,bij,bnj->bn", x2, E_bad, x1).abs().max() > 1e-3
    # An essential matrix has two equal singular values and one zero.
    s = torch.linalg.svdvals(E)
    assert torch.allclose(s[:, 0], s[:, 1], atol=1e-12) and s[:, 2].abs().max() < 1e-12


def test_normalize_keypoints_matches_numpy():
    K = torch.tensor([[800.0, 0, 320.5], [0, 780.0, 241.0], [0, 0, 1]], dtype=torch.float64)
    kp = torch.tensor([[0.0, 0.0], [640.0, 480.0], [320.5, 241.0]], dtype=torch.float64)
    expected = np.linalg.solve(K.numpy(), np.c_[kp.numpy(), np.ones(3)].T).T[:, :2]
    assert np.allclose(normalize_keypoints(kp, K).numpy(), expected, atol=1e-15)


def _numpy_symmetric_epipolar_distance(x: np.ndarray, E: np.ndarray) -> np.ndarray:
    """Point-to-line distances written out directly, float64."""
    out = []
    for x1, y1, x2, y2 in x:
        p1, p2 = np.array([x1, y1, 1.0]), np.array([x2, y2, 1.0])
        l2, l1 = E @ p1, E.T @ p2
        d2 = (p2 @ l2) / math.hypot(l2[0], l2[1])
        d1 = (p1 @ l1) / math.hypot(l1[0], l1[1])
        out.append(d1 * d1 + d2 * d2)
    return np.array(out)


def test_symmetric_epipolar_distance_against_numpy_and_closed_form():
    p = make_problem(1, 50, seed=3, outliers=20)
    E = essential_from_pose(p["R"], p["t"])
    d = symmetric_epipolar_distance(p["x"], E)
    ref = _numpy_symmetric_epipolar_distance(p["x"][0].numpy(), E[0].numpy())
    assert np.allclose(d[0].numpy(), ref, rtol=1e-10, atol=1e-30)
    assert (d[p["labels"]] < 1e-20).all() and (
        d[~p["labels"]] > INLIER_THRESHOLD
    ).float().mean() > 0.9
    # Closed form: moving x2 by delta along the normal of its epipolar line puts it at
    # distance delta from that line.
    x = p["x"][:, :30].clone()
    l2 = torch.cat([x[..., :2], torch.ones_like(x[..., :1])], -1) @ E[0].T
    normal = l2[..., :2] / l2[..., :2].norm(dim=-1, keepdim=True)
    x[..., 2:] += 3e-3 * normal
    E_scaled = 7.0 * E  # the scale of E must cancel
    d2_only = symmetric_epipolar_distance(x, E_scaled)
    ref = _numpy_symmetric_epipolar_distance(x[0].numpy(), E[0].numpy())
    assert np.allclose(d2_only[0].numpy(), ref, rtol=1e-9)
    l1 = torch.cat([x[..., 2:], torch.ones_like(x[..., :1])], -1) @ E[0]
    dist_image1 = (torch.cat([x[..., :2], torch.ones_like(x[..., :1])], -1) * l1).sum(-1) / l1[
        ..., :2
    ].norm(dim=-1)
    assert torch.allclose(d2_only - dist_image1.square(), torch.full_like(d2_only, 9e-6), rtol=1e-9)


def test_sampson_distance_matches_opencv_and_optimal_correction():
    p = make_problem(1, 40, seed=5)
    E = essential_from_pose(p["R"], p["t"])[0]
    g = torch.Generator().manual_seed(0)
    x = p["x"][0] + 1e-3 * torch.randn(40, 4, generator=g, dtype=torch.float64)
    d = sampson_distance(x, E)
    h = lambda a: np.array([a[0], a[1], 1.0]).reshape(3, 1)
    cv_ref = np.array([cv2.sampsonDistance(h(r[:2]), h(r[2:]), E.numpy()) for r in x.numpy()])
    assert np.allclose(d.numpy(), cv_ref, rtol=1e-9)
    # Sampson is the first-order approximation of the squared distance to the optimally
    # corrected matches (Hartley-Sturm, cv2.correctMatches).
    c1, c2 = cv2.correctMatches(E.numpy(), x[None, :, :2].numpy(), x[None, :, 2:].numpy())
    geometric = ((c1[0] - x[:, :2].numpy()) ** 2).sum(-1) + ((c2[0] - x[:, 2:].numpy()) ** 2).sum(
        -1
    )
    assert np.allclose(d.numpy(), geometric, rtol=1e-2)


def _numpy_weighted_eight_point(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = x.T
    X = np.stack([x2 * x1, x2 * y1, x2, y2 * x1, y2 * y1, y2, x1, y1, np.ones_like(x1)], 1)
    _, _, Vt = np.linalg.svd(np.sqrt(w)[:, None] * X)
    return Vt[-1].reshape(3, 3)


def _same_up_to_sign(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    a = A.flatten(-2) / A.flatten(-2).norm(dim=-1, keepdim=True)
    b = B.flatten(-2) / B.flatten(-2).norm(dim=-1, keepdim=True)
    return (a * b).sum(-1).abs()


def test_weighted_eight_point_recovers_e_and_ignores_zero_weight_outliers():
    p = make_problem(3, 60, seed=7, outliers=30)
    E_gt = essential_from_pose(p["R"], p["t"])
    w = p["labels"].double()
    E = weighted_eight_point(p["x"], w)
    assert E.shape == (3, 3, 3) and E.dtype == torch.float64
    assert (_same_up_to_sign(E, E_gt) > 1 - 1e-8).all()
    assert torch.allclose(E.flatten(-2).norm(dim=-1), torch.ones(3, dtype=torch.float64))
    E_uniform = weighted_eight_point(p["x"], torch.ones_like(w))
    assert (_same_up_to_sign(E_uniform, E_gt) < 0.99).all()
    g = torch.Generator().manual_seed(2)
    w_rand = torch.rand(3, 60, generator=g, dtype=torch.float64)
    E_rand = weighted_eight_point(p["x"], w_rand)
    for b in range(3):
        ref = _numpy_weighted_eight_point(p["x"][b].numpy(), w_rand[b].numpy() + WEIGHT_FLOOR)
        assert _same_up_to_sign(E_rand[b], torch.from_numpy(ref)) > 1 - 1e-9
    assert weighted_eight_point(p["x"].float(), w.float()).dtype == torch.float32


def test_weighted_eight_point_gradcheck():
    p = make_problem(2, 12, seed=11)  # noisy, so that the weights matter
    noise = 0.02 * torch.randn(
        2, 12, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    x = (p["x"] + noise).requires_grad_(True)
    w = (
        0.5 + torch.rand(2, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ).requires_grad_(True)

    def outer(x, w):  # e eᵀ does not depend on the eigenvector's arbitrary sign
        e = weighted_eight_point(x, w).flatten(-2)
        return e.unsqueeze(-1) * e.unsqueeze(-2)

    assert torch.autograd.gradcheck(outer, (x, w), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("case", ["all_zero", "five_positive", "identical_matches"])
def test_weighted_eight_point_degenerate_weights_give_finite_values_and_gradients(case):
    p = make_problem(2, 40, seed=13)
    x = p["x"].clone()
    w = torch.zeros(2, 40, dtype=torch.float64)
    if case == "five_positive":
        w[:, :5] = 1.0
    if case == "identical_matches":
        x[:] = x[:, :1]
        w[:] = 1.0
    x.requires_grad_(True)
    w.requires_grad_(True)
    E = weighted_eight_point(x, w)
    (E.square().sum() + E.sum()).backward()
    assert torch.isfinite(E).all() and torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()
    if case == "all_zero":  # documented fallback: the unweighted eight-point on all matches
        E_plain = weighted_eight_point(p["x"], torch.ones_like(w))
        assert (_same_up_to_sign(E, E_plain) > 1 - 1e-8).all()


def test_recover_pose_matches_opencv_and_ground_truth():
    p = make_problem(4, 80, seed=17)
    E = essential_from_pose(p["R"], p["t"])
    R, t, n = recover_pose(E, p["x"])
    assert (n == 80).all()
    err_r, err_t = pose_errors(R, t, p["R"], p["t"])
    assert err_r.max() < 1e-6 and err_t.max() < 1e-6
    for b in range(4):
        _, Rc, tc, _ = cv2.recoverPose(
            E[b].numpy(), p["x"][b, :, :2].numpy(), p["x"][b, :, 2:].numpy(), np.eye(3)
        )
        assert np.allclose(R[b].numpy(), Rc, atol=1e-9)
        assert np.allclose(t[b].numpy(), tc.ravel(), atol=1e-9)
    E_bad = essential_from_pose(
        p["R"] @ rotation(torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)), p["t"]
    )
    err_bad, _ = pose_errors(*recover_pose(E_bad, p["x"])[:2], p["R"], p["t"])
    assert (err_bad > 5.0).all()


def test_pose_errors_closed_form():
    theta, phi = 7.0, 12.0
    R_gt = rotation(torch.tensor([[0.2, -0.1, 0.3]], dtype=torch.float64))
    axis = torch.tensor([[0.0, 0.6, 0.8]], dtype=torch.float64)
    R_est = R_gt @ rotation(math.radians(theta) * axis)
    t_gt = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    t_est = -torch.tensor(
        [[math.cos(math.radians(phi)), math.sin(math.radians(phi)), 0.0]], dtype=torch.float64
    )
    err_r, err_t = pose_errors(R_est, 3.0 * t_est, R_gt, t_gt)  # scale and sign of t ignored
    assert torch.allclose(err_r, torch.tensor([theta], dtype=torch.float64), atol=1e-10)
    assert torch.allclose(err_t, torch.tensor([phi], dtype=torch.float64), atol=1e-10)
    err_r, err_t = pose_errors(R_gt, t_gt, R_gt, t_gt)
    assert err_r.item() < 1e-6 and err_t.item() < 1e-6
    nan = torch.full_like(R_gt, float("nan"))
    err_r, err_t = pose_errors(nan, t_gt, R_gt, t_gt)
    assert err_r.item() == 180.0 and err_t.item() == 90.0


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: skew(torch.zeros(4)), "v"),
        (lambda: essential_from_pose(torch.eye(3), torch.zeros(3, 1)), "t"),
        (lambda: symmetric_epipolar_distance(torch.zeros(10, 3), torch.eye(3)), "x"),
        (lambda: symmetric_epipolar_distance(torch.full((10, 4), float("nan")), torch.eye(3)), "x"),
        (lambda: weighted_eight_point(torch.zeros(2, 10, 4), torch.zeros(2, 9)), "weights"),
        (lambda: weighted_eight_point(torch.zeros(2, 10, 4), -torch.ones(2, 10)), "weights"),
        (lambda: recover_pose(torch.eye(3), torch.zeros(1, 10, 4)), "E"),
        (lambda: normalize_keypoints(torch.zeros(5, 2), torch.eye(2)), "K"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}"):
        call()


def test_weighted_eight_point_agrees_with_opencv_five_point():
    """On exact matches OpenCV's five-point RANSAC and the weighted eight-point find the same E."""
    p = make_problem(2, 60, seed=19, outliers=20)
    E = weighted_eight_point(p["x"], p["labels"].double())
    for b in range(2):
        pts1, pts2 = p["x"][b, :, :2].numpy(), p["x"][b, :, 2:].numpy()
        cv2.setRNGSeed(0)
        E_cv, mask = cv2.findEssentialMat(
            pts1, pts2, np.eye(3), method=cv2.RANSAC, prob=0.999, threshold=1e-4
        )
        assert _same_up_to_sign(E[b], torch.from_numpy(E_cv[:3])) > 1 - 1e-8
        assert np.array_equal(mask.ravel().astype(bool), p["labels"][b].numpy())


def test_pixel_sampson_distance_equals_opencv_for_unequal_focal_lengths():
    p = make_problem(batch=2, n=50, seed=5, outliers=20)
    x = p["x"] + 1e-3 * torch.randn(
        p["x"].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    K1 = torch.tensor([[800.0, 0, 320], [0, 620, 240], [0, 0, 1]], dtype=torch.float64).expand(
        2, 3, 3
    )
    K2 = torch.tensor([[500.0, 0, 300], [0, 700, 200], [0, 0, 1]], dtype=torch.float64).expand(
        2, 3, 3
    )
    E = essential_from_pose(p["R"], p["t"])
    d = pixel_sampson_distance(x, E, K1, K2)
    for b in range(2):
        F = np.linalg.inv(K2[b].numpy()).T @ E[b].numpy() @ np.linalg.inv(K1[b].numpy())
        u1 = x[b, :, :2].numpy() @ K1[b, :2, :2].numpy().T + K1[b, :2, 2].numpy()
        u2 = x[b, :, 2:].numpy() @ K2[b, :2, :2].numpy().T + K2[b, :2, 2].numpy()
        ref = [
            cv2.sampsonDistance(np.r_[a, 1.0][:, None], np.r_[c, 1.0][:, None], F)
            for a, c in zip(u1, u2)
        ]
        np.testing.assert_allclose(d[b].numpy(), ref, rtol=1e-9, atol=1e-12)
    assert d[:, :30].max() < 1e-3 * d[:, 30:].median()  # exact matches up to the small noise
