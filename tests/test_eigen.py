"""The sync-free smallest eigenvector against ``torch.linalg.eigh`` (float64, LAPACK) and a
40-digit reference (mpmath), on eight-point systems and on constructed degenerate spectra.

The tolerance is eigh's own accuracy, ε·λₘₐₓ / (λ₁ − λ₀) on the computed matrix (the Davis-Kahan
bound for a backward-stable solver): the two vectors are within 4 such bounds of each other and
of the 40-digit eigenvector (measured: within 1 bound).
"""

from __future__ import annotations

import mpmath
import pytest
import torch

from corrnet.geometry import WEIGHT_FLOOR, eight_point_rows, weighted_eight_point
from corrnet.geometry.eigen import SHIFT_EPS, canonical_sign, smallest_eigenvector

from .conftest import make_problem

EPS = torch.finfo(torch.float64).eps


def systems(batch: int, n: int, seed: int, outliers: int, noise: float) -> torch.Tensor:
    """XᵀWX (batch, 9, 9) of noisy matches of true essential matrices, the last ``outliers``
    matches random, weights uniform in [0, 1) plus the floor."""
    p = make_problem(batch, n, seed=seed, outliers=outliers)
    g = torch.Generator().manual_seed(seed)
    x = p["x"] + noise * torch.randn(p["x"].shape, generator=g, dtype=torch.float64)
    X = eight_point_rows(x)
    w = torch.rand(batch, n, generator=g, dtype=torch.float64) + WEIGHT_FLOOR
    return X.transpose(-1, -2) @ (X * w.unsqueeze(-1))


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a ∓ b‖ over the last dimension, the sign that makes it smallest."""
    return torch.minimum((a - b).norm(dim=-1), (a + b).norm(dim=-1))


def eigh_bound(M: torch.Tensor) -> torch.Tensor:
    lam = torch.linalg.eigvalsh(M)
    return EPS * lam[..., -1] / (lam[..., 1] - lam[..., 0])


def mp_smallest(M: torch.Tensor) -> torch.Tensor:
    """The smallest eigenvector of one (9, 9) matrix's lower triangle, 40 digits."""
    with mpmath.workdps(40):
        lower = torch.tril(M) + torch.tril(M, -1).T
        lam, Q = mpmath.eigsy(mpmath.matrix(lower.tolist()))
        i = min(range(len(lam)), key=lambda k: lam[k])
        return torch.tensor([float(Q[r, i]) for r in range(Q.rows)], dtype=torch.float64)


@pytest.mark.parametrize(
    "noise, outliers", [(0.0, 0), (1e-3, 0), (1e-3, 50), (1e-2, 100), (3e-2, 150)]
)
def test_equals_eigh_on_eight_point_systems(noise, outliers):
    M = systems(256, 200, seed=1, outliers=outliers, noise=noise)
    v = smallest_eigenvector(M)
    e = torch.linalg.eigh(M).eigenvectors[..., 0]
    bound = eigh_bound(M)
    assert bound.max() < 1e-10  # well-posed systems: eigh is accurate to 1e-10 here
    assert (distance(v, e) <= 4 * bound).all()
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(256, dtype=torch.float64))
    for b in range(6):
        assert distance(v[b], mp_smallest(M[b])) <= 4 * bound[b]


@pytest.mark.parametrize("positive", [0, 5, 7, 8])
def test_equals_eigh_with_few_weighted_matches(positive):
    """Fewer than eight positive weights: the floor's tiny eigenvalues, still eigh's vector
    within its (here loose, up to 1e-2) accuracy."""
    p = make_problem(64, 40, seed=13)
    X = eight_point_rows(p["x"])
    w = torch.zeros(64, 40, dtype=torch.float64)
    w[:, :positive] = 1.0
    M = X.transpose(-1, -2) @ (X * (w + WEIGHT_FLOOR).unsqueeze(-1))
    v = smallest_eigenvector(M)
    assert (distance(v, torch.linalg.eigh(M).eigenvectors[..., 0]) <= 4 * eigh_bound(M)).all()


def test_float32_matrices_within_float32_accuracy():
    M = systems(64, 200, seed=2, outliers=50, noise=1e-3)
    v = smallest_eigenvector(M.float())
    assert v.dtype == torch.float32
    e = torch.linalg.eigh(M).eigenvectors[..., 0]
    bound = eigh_bound(M) / EPS * torch.finfo(torch.float32).eps
    assert (distance(v.double(), e) <= 4 * bound).all()


def longest_axis_projection(V: torch.Tensor) -> torch.Tensor:
    """Π eⱼ / ‖Π eⱼ‖ for Π = V Vᵀ (V (..., n, m) orthonormal), j the axis longest under Π."""
    P = V @ V.transpose(-1, -2)
    j = P.diagonal(dim1=-2, dim2=-1).argmax(-1)
    v = P.gather(-1, j[..., None, None].expand(*P.shape[:-1], 1)).squeeze(-1)
    return canonical_sign(v / v.norm(dim=-1, keepdim=True))


@pytest.mark.parametrize("repeat, lam0", [(2, 0.3), (3, 0.05), (2, 0.0), (3, 1e-6), (5, 0.0)])
def test_repeated_smallest_eigenvalue(repeat, lam0):
    """Q diag(λ₀ × repeat, 1 ... 5) Qᵀ: a unit vector of λ₀'s eigenspace; where the rounding
    splits of the repeat (~1e-15 tr) are far below λ₀ (the first two), exactly the
    normalised projection of the axis longest in that eigenspace."""
    g = torch.Generator().manual_seed(repeat)
    Q, _ = torch.linalg.qr(torch.randn(64, 9, 9, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.full((repeat,), lam0), torch.linspace(1, 5, 9 - repeat)]).double()
    M = Q @ torch.diag_embed(lam.expand(64, 9)) @ Q.transpose(-1, -2)
    v = smallest_eigenvector(M)
    S = Q[..., :repeat]
    outside = v - (S @ (S.transpose(-1, -2) @ v.unsqueeze(-1))).squeeze(-1)
    assert outside.norm(dim=-1).max() < 1e-12
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(64, dtype=torch.float64))
    if lam0 > 1e-3:
        torch.testing.assert_close(v, longest_axis_projection(S), atol=1e-9, rtol=0)


def test_rank_one_identical_matches():
    """All matches identical: M = c·rrᵀ, a unit vector orthogonal to r (eight-dimensional null
    space)."""
    p = make_problem(16, 40, seed=3)
    X = eight_point_rows(p["x"][:, :1].expand(-1, 40, -1))
    M = X.transpose(-1, -2) @ X
    v = smallest_eigenvector(M)
    r = X[:, 0] / X[:, 0].norm(dim=-1, keepdim=True)
    assert (v * r).sum(-1).abs().max() < 1e-12
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(16, dtype=torch.float64))


def test_sign_nan_and_zero_matrix():
    M = systems(32, 100, seed=4, outliers=20, noise=1e-3)
    v = smallest_eigenvector(M)
    assert (v.gather(-1, v.abs().argmax(-1, keepdim=True)) > 0).all()  # canonical sign
    assert torch.equal(canonical_sign(-v), v)
    M[3, 2, 1] = torch.nan
    out = smallest_eigenvector(M)
    assert out[3].isnan().all() and torch.equal(
        out[torch.arange(32) != 3], v[torch.arange(32) != 3]
    )
    assert torch.equal(smallest_eigenvector(torch.zeros(2, 9, 9)), torch.eye(9)[0].expand(2, 9))
    assert SHIFT_EPS * EPS < 1e-11  # the shift stays far below the systems' eigenvalue gaps
    for bad in (torch.zeros(9, 8), torch.zeros(9), torch.zeros(2, 9, 9, dtype=torch.bfloat16)):
        with pytest.raises(ValueError, match=r"M: expected a float32 or float64 \(\.\.\., n, n\)"):
            smallest_eigenvector(bad)


def test_weighted_eight_point_without_gradient_equals_the_eigh_path():
    """No gradient: the sync-free solver; with one: eigh.  The same E (canonical sign) within
    float32 rounding for float32 and bfloat16-autocast inputs."""
    p = make_problem(128, 150, seed=5, outliers=60)
    g = torch.Generator().manual_seed(5)
    x = (p["x"] + 1e-3 * torch.randn(p["x"].shape, generator=g, dtype=torch.float64)).float()
    logits = torch.randn(128, 150, generator=g)
    for dtype in (torch.float32, torch.bfloat16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            w = torch.relu(torch.tanh(logits.to(dtype)))
            with torch.no_grad():
                fast = weighted_eight_point(x, w, validate=False)
            exact = weighted_eight_point(x, w.detach().requires_grad_(), validate=False)
        assert fast.dtype == exact.dtype == torch.float32
        torch.testing.assert_close(fast, exact.detach(), atol=1e-6, rtol=0)


def test_head_without_gradient_compiles_as_one_graph():
    """No graph break (a sync would be one) in the no-gradient head: ``fullgraph=True``."""
    p = make_problem(4, 100, seed=6, outliers=30)
    w = torch.rand(4, 100, generator=torch.Generator().manual_seed(6))
    head = torch.compile(
        lambda x, w: weighted_eight_point(x, w, validate=False), fullgraph=True, backend="aot_eager"
    )
    with torch.no_grad():
        torch.testing.assert_close(
            head(p["x"].float(), w), weighted_eight_point(p["x"].float(), w), atol=0, rtol=0
        )
