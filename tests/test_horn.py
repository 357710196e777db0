"""The sync-free rigid head (Horn's quaternion rotation) against the SVD Kabsch rotation and
closed forms: random rotations up to 180°, noise, down-weighted outliers, reflections,
planar, collinear and coincident points, float32 inputs, torch.compile.

The tolerance is the rotation's own sensitivity to rounding in H: ε·σ₁ / (σ₂ + d σ₃) (H's
singular values σ, d = sign det of the Kabsch rotation's V Uᵀ), the smallest gap between the
quaternion eigenvalues relative to the largest; both solvers are within 64 such bounds of
each other (measured: within 40; about 5e-15).
"""

from __future__ import annotations

import math

import pytest
import torch

from corrnet.geometry.rigid import (
    KABSCH_WEIGHT_FLOOR,
    horn_matrix,
    horn_rotation,
    quaternion_to_rotation,
    transform_points,
    weighted_kabsch,
)

from .conftest import rotation

EPS = torch.finfo(torch.float64).eps


def problem(
    batch: int, n: int, seed: int, noise: float, outliers: int = 0, angle: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x1, x2 (batch, n, 3) of a random rigid motion (angle in radians, random if None) with
    Gaussian noise (metres, on a ~2 m cloud); the last ``outliers`` matches random with
    weights in [0, 1e-3), the others in [0.1, 1)."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    theta = (
        math.pi * torch.rand(batch, 1, generator=g, dtype=torch.float64)
        if angle is None
        else torch.full((batch, 1), angle, dtype=torch.float64)
    )
    R = rotation(theta * axis)
    t = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    x1 = 2.0 * torch.randn(batch, n, 3, generator=g, dtype=torch.float64)
    x2 = transform_points(R, t, x1) + noise * torch.randn(batch, n, 3, generator=g).double()
    w = 0.1 + 0.9 * torch.rand(batch, n, generator=g, dtype=torch.float64)
    if outliers:
        x2[:, -outliers:] = 3.0 * torch.randn(batch, outliers, 3, generator=g).double()
        w[:, -outliers:] = 1e-3 * torch.rand(batch, outliers, generator=g).double()
    return x1, x2, w


def cross_covariance(x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """H of :func:`weighted_kabsch` (B, 3, 3), float64."""
    w = w.double() + KABSCH_WEIGHT_FLOOR
    w = (w / w.sum(-1, keepdim=True)).unsqueeze(-1)
    c1, c2 = (w * x1).sum(-2, keepdim=True), (w * x2).sum(-2, keepdim=True)
    return (x1 - c1).transpose(-1, -2) @ (w * (x2 - c2))


def bound(H: torch.Tensor) -> torch.Tensor:
    """ε·σ₁ / (σ₂ + d σ₃) per batch entry."""
    U, s, Vh = torch.linalg.svd(H)
    d = torch.linalg.det(Vh.transpose(-1, -2) @ U.transpose(-1, -2)).sign()
    return EPS * s[..., 0] / (s[..., 1] + d * s[..., 2])


def both(x1, x2, w) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(R, t) without a gradient (Horn) and with one (SVD)."""
    with torch.no_grad():
        fast = weighted_kabsch(x1, x2, w, validate=False)
    exact = weighted_kabsch(x1, x2, w.clone().requires_grad_(), validate=False)
    return fast, tuple(v.detach() for v in exact)


@pytest.mark.parametrize(
    "noise, outliers, angle",
    [
        (0.0, 0, None),
        (0.01, 0, None),
        (0.05, 100, None),
        (0.01, 0, math.pi),
        (0.01, 50, math.pi - 1e-6),
        (0.0, 0, math.pi - 1e-3),
        (0.02, 0, 1e-8),
    ],
)
def test_horn_equals_the_svd_kabsch(noise, outliers, angle):
    x1, x2, w = problem(256, 200, seed=1, noise=noise, outliers=outliers, angle=angle)
    (R, t), (R_svd, t_svd) = both(x1, x2, w)
    b = bound(cross_covariance(x1, x2, w))
    assert b.max() < 1e-14  # well-posed: both solvers are accurate to ~1e-15 here
    assert ((R - R_svd).abs().amax((-2, -1)) <= 64 * b).all()
    torch.testing.assert_close(t, t_svd, atol=1e-13, rtol=0)
    eye = torch.eye(3, dtype=torch.float64).expand(256, 3, 3)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=16 * EPS, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(256, dtype=torch.float64))


def test_float32_inputs_and_a_reflected_target():
    """float32 points (solved in float64 as before); the mirror image of a rigid motion,
    whose best orthogonal fit is a reflection: both give the same proper rotation."""
    x1, x2, w = problem(64, 100, seed=2, noise=0.01, outliers=20)
    (R, t), (R_svd, t_svd) = both(x1.float(), x2.float(), w.float())
    H = cross_covariance(x1.float().double(), x2.float().double(), w.float())
    assert ((R - R_svd).abs().amax((-2, -1)) <= 64 * bound(H)).all()
    torch.testing.assert_close(t, t_svd, atol=1e-12, rtol=0)
    mirrored = x2 * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    (R, _), (R_svd, _) = both(x1, mirrored, w)
    H = cross_covariance(x1, mirrored, w)
    assert (torch.linalg.det(H) < 0).all()  # the unconstrained fit would reflect
    assert ((R - R_svd).abs().amax((-2, -1)) <= 64 * bound(H)).all()
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(64, dtype=torch.float64))


def test_horn_matrix_and_quaternion_against_closed_forms():
    """qᵀ N q = tr(R(q) H) for any unit q; R(q) is the rotation by 2·acos(w) about (x, y, z)."""
    g = torch.Generator().manual_seed(3)
    H = torch.randn(32, 3, 3, generator=g, dtype=torch.float64)
    q = torch.randn(32, 4, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    Rq = quaternion_to_rotation(q)
    axis = q[:, 1:] / q[:, 1:].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(q[:, 1:].norm(dim=-1), q[:, 0])
    torch.testing.assert_close(Rq, rotation(angle[:, None] * axis), atol=1e-14, rtol=0)
    N = horn_matrix(H)
    torch.testing.assert_close(N, N.transpose(-1, -2), atol=0, rtol=0)
    qNq = (q.unsqueeze(-2) @ N @ q.unsqueeze(-1))[:, 0, 0]
    torch.testing.assert_close(qNq, (Rq @ H).diagonal(dim1=-2, dim2=-1).sum(-1), atol=1e-13, rtol=0)


def test_planar_points_equal_the_svd_and_recover_the_motion():
    """σ₃ = 0: still unique (σ₂ + σ₃ > 0)."""
    x1, x2, w = problem(64, 50, seed=4, noise=0.0)
    x1[..., 2] = 0.0
    R_true = rotation(torch.tensor([0.4, -2.0, 1.1], dtype=torch.float64)).expand(64, 3, 3)
    x2 = transform_points(R_true, torch.ones(64, 3, dtype=torch.float64), x1)
    (R, t), (R_svd, _) = both(x1, x2, w)
    torch.testing.assert_close(R, R_true, atol=1e-13, rtol=0)
    torch.testing.assert_close(R, R_svd, atol=1e-13, rtol=0)
    torch.testing.assert_close(t, torch.ones(64, 3, dtype=torch.float64), atol=1e-13, rtol=0)


def weighted_cost(R, t, x1, x2, w) -> torch.Tensor:
    return (w * (transform_points(R, t, x1) - x2).square().sum(-1)).sum(-1)


def test_collinear_points_give_a_minimiser_and_coincident_ones_the_identity():
    """All points on a line: the rotation about it is free; Horn's R maps the source line
    onto the target line and both fit exactly.  All source points at one place (centred
    exactly to 0): H = 0, R = I, t = c₂ − c₁.  NaN in, NaN out."""
    g = torch.Generator().manual_seed(5)
    u = torch.nn.functional.normalize(torch.randn(16, 3, generator=g, dtype=torch.float64), dim=-1)
    s = torch.randn(16, 30, 1, generator=g, dtype=torch.float64)
    x1 = s * u.unsqueeze(1) + torch.randn(16, 1, 3, generator=g, dtype=torch.float64)
    R_true = rotation(torch.randn(16, 3, generator=g, dtype=torch.float64))
    x2 = transform_points(R_true, torch.randn(16, 3, generator=g, dtype=torch.float64), x1)
    w = torch.rand(16, 30, generator=g, dtype=torch.float64) + 0.1
    (R, t), (R_svd, t_svd) = both(x1, x2, w)
    v = (R_true @ u.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close((R @ u.unsqueeze(-1)).squeeze(-1), v, atol=1e-12, rtol=0)
    cost, cost_svd = weighted_cost(R, t, x1, x2, w), weighted_cost(R_svd, t_svd, x1, x2, w)
    assert cost.max() < 1e-20 and cost_svd.max() < 1e-20  # both exact fits
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(16, dtype=torch.float64))

    x1 = torch.zeros(4, 10, 3, dtype=torch.float64)
    x2 = torch.randn(4, 10, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        R, t = weighted_kabsch(x1, x2, torch.ones(4, 10))
    assert torch.equal(R, torch.eye(3, dtype=torch.float64).expand(4, 3, 3))
    torch.testing.assert_close(t, x2.mean(1), atol=1e-15, rtol=0)
    torch.testing.assert_close(horn_rotation(torch.zeros(2, 3, 3)), torch.eye(3).expand(2, 3, 3))
    H = torch.randn(3, 3, 3, generator=g, dtype=torch.float64)
    H[1, 0, 2] = torch.nan
    R = horn_rotation(H)
    assert R[1].isnan().all() and R[[0, 2]].isfinite().all()


@pytest.mark.parametrize("spread", [1e-2, 1e-3, 1e-4])
def test_thin_clouds_equal_the_svd(spread):
    """Points spread ``spread`` of their extent off a line (σ₂/σ₁ ~ spread²): still the SVD's
    rotation within its own sensitivity, which grows as 1/spread²."""
    g = torch.Generator().manual_seed(8)
    u = torch.nn.functional.normalize(torch.randn(64, 3, generator=g, dtype=torch.float64), dim=-1)
    x1 = torch.randn(64, 100, 1, generator=g, dtype=torch.float64) * u.unsqueeze(1)
    x1 = x1 + spread * torch.randn(64, 100, 3, generator=g, dtype=torch.float64)
    R_true = rotation(torch.randn(64, 3, generator=g, dtype=torch.float64))
    x2 = transform_points(R_true, torch.zeros(64, 3, dtype=torch.float64), x1)
    x2 = x2 + 1e-3 * spread * torch.randn(64, 100, 3, generator=g, dtype=torch.float64)
    w = torch.rand(64, 100, generator=g, dtype=torch.float64)
    (R, _), (R_svd, _) = both(x1, x2, w)
    assert ((R - R_svd).abs().amax((-2, -1)) <= 64 * bound(cross_covariance(x1, x2, w))).all()


def test_near_collinear_points_cost_at_most_the_eigenvalue_gap_more():
    """Points within ~1e-7 of a line (σ₂ + σ₃ ≪ σ₁, below the solver's resolution): the
    cost exceeds the SVD's minimum by at most 4(σ₂ + d σ₃) (the docstring's bound)."""
    g = torch.Generator().manual_seed(6)
    u = torch.nn.functional.normalize(torch.randn(32, 3, generator=g, dtype=torch.float64), dim=-1)
    x1 = torch.randn(32, 40, 1, generator=g, dtype=torch.float64) * u.unsqueeze(1)
    x1 = x1 + 1e-7 * torch.randn(32, 40, 3, generator=g, dtype=torch.float64)
    R_true = rotation(torch.randn(32, 3, generator=g, dtype=torch.float64))
    x2 = transform_points(R_true, torch.zeros(32, 3, dtype=torch.float64), x1)
    x2 = x2 + 1e-7 * torch.randn(32, 40, 3, generator=g, dtype=torch.float64)
    w = torch.rand(32, 40, generator=g, dtype=torch.float64) + 0.1
    (R, t), (R_svd, t_svd) = both(x1, x2, w)
    wn = (w + KABSCH_WEIGHT_FLOOR) / (w + KABSCH_WEIGHT_FLOOR).sum(-1, keepdim=True)
    H = cross_covariance(x1, x2, w)
    U, s, Vh = torch.linalg.svd(H)
    d = torch.linalg.det(Vh.transpose(-1, -2) @ U.transpose(-1, -2)).sign()
    excess = weighted_cost(R, t, x1, x2, wn) - weighted_cost(R_svd, t_svd, x1, x2, wn)
    assert (excess <= 4 * (s[:, 1] + d * s[:, 2]) + 1e-15).all()
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(32, dtype=torch.float64))


def test_head_without_gradient_compiles_as_one_graph():
    """No graph break (a sync would be one) in the no-gradient rigid head."""
    x1, x2, w = problem(4, 100, seed=7, noise=0.01, outliers=20)
    head = torch.compile(
        lambda a, b, c: weighted_kabsch(a, b, c, validate=False),
        fullgraph=True,
        backend="aot_eager",
    )
    with torch.no_grad():
        R, t = head(x1.float(), x2.float(), w.float())
        R_eager, t_eager = weighted_kabsch(x1.float(), x2.float(), w.float())
    torch.testing.assert_close(R, R_eager, atol=0, rtol=0)
    torch.testing.assert_close(t, t_eager, atol=0, rtol=0)
