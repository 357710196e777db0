"""Deterministic robust essential matrix: multi-start IRLS eight-point, then robust LM.

No random sampling.  Given matches x (B, N, 4) in normalised coordinates and prior weights
w (B, N) (the network's relu(tanh(logit)) on the matches it keeps), :func:`robust_eight_point`
minimises the robust weighted Sampson cost

    C_s(E) = Σᵢ wᵢ ρ(dᵢ(E) / s²),    dᵢ = Sampson distance (squared normalised units),

over essential matrices, for a sequence of scales s (coarse to fine, normalised units):

1. **Starts**: for each k of ``starts`` (8, 16, 32, 64, 128 and all), the weighted
   eight-point (float64, no Hartley normalisation: the network's weights are trained for
   the eight-point on these coordinates, and with it the start was worse on synthetic
   validation pairs) on the k matches of largest prior weight, searched in its 4-D
   near-null space: the eigenvectors of the four smallest eigenvalues of XᵀWX, combined
   along a fixed grid of 272 directions (:data:`NULLSPACE_GRID`), each projected onto the
   essential manifold (singular values equal, third zero), the one of lowest C_s (coarsest
   scale) kept.  The first direction is the plain eight-point; the search matters when the
   matches are near a plane, where the eight-point's null space is 3-D and its single
   eigenvector arbitrary.  A single start (all matches, the network's own E) is the weak
   point of plain IRLS: with many weighted outliers it converges to a wrong minimum; the
   small top-k starts are clean when the network ranks well.
2. **IRLS** at each scale, on every start (batched): solve the weighted eight-point with
   weights wᵢ ψ(dᵢ / s²) / gᵢ, where ψ = ρ' is the kernel's weight function and gᵢ the
   Sampson denominator |E x1|₁₂² + |Eᵀ x2|₁₂² under the current E (so that the algebraic
   residual becomes the Sampson distance to first order), projected onto the manifold.
   The step is damped: of E(α) = proj((1 - α) E + α E_step), α in 1, ½, ¼, the one of lowest
   C_s is kept only where it does not raise C_s (per pair), so at a fixed scale the cost of
   the accepted iterates never increases; a rejected step ends that scale for that pair.
3. **Selection**: the start with the lowest C_s at the finest scale (first on a tie).
4. **Refinement**: Levenberg-Marquardt on the essential manifold (R on SO(3), t on the unit
   sphere; 5 degrees of freedom) of the IRLS-weighted signed Sampson residuals at the finest
   scale, a step kept only where C_s decreases.  The eight-point's projection is not the
   minimiser of C_s; this step is what makes the pose accurate.

The kernels (u = d / s²): ``cauchy`` ρ = log(1 + u), ψ = 1 / (1 + u);
``geman-mcclure`` ρ = u / (1 + u), ψ = 1 / (1 + u)²; ``tukey`` ρ = (1 - (1 - u)³) / 3 for
u < 1 else 1/3, ψ = (1 - u)² for u < 1 else 0.  The defaults were chosen on synthetic
validation pairs (the measurements are in docs/evaluation.md): Geman-McClure, bounded
(an outlier costs at most its weight, so wrong minima that pull in many far matches do not
pay as they do under the unbounded Cauchy), at scales 3e-3 then 1e-3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from .checks import as_tensor
from .eight_point import WEIGHT_FLOOR, eight_point_rows, weighted_eight_point
from .epipolar import epipolar_terms, skew
from .pose import _decompose

DEFAULT_SCALES = (3e-3, 1e-3)
"""Kernel scales s, coarse to fine, in normalised units (1e-3 is OANet's RANSAC threshold)."""
DEFAULT_KERNEL = "geman-mcclure"
DEFAULT_ITERATIONS = 4
"""IRLS steps per scale."""
DEFAULT_REFINE_STEPS = 10
"""Levenberg-Marquardt steps at the finest scale."""
DEFAULT_STARTS = (8, 16, 32, 64, 128, None)
"""Starting points: the weighted eight-point on the top-k prior weights (None: all)."""
STEP_SIZES = (1.0, 0.5, 0.25)
"""Fractions of an IRLS step tried (on the essential manifold) before a scale gives up."""
DENOMINATOR_FLOOR = 1e-12
"""Lower bound of the Sampson denominator (a match at the epipole)."""
FD_STEP = 1e-6
"""Central-difference step of the Levenberg-Marquardt Jacobian (radians / unit sphere)."""


def _kernel(name: str, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ρ(u) and ψ(u) = ρ'(u) of kernel ``name`` for u = d / s² >= 0."""
    if name == "cauchy":
        return torch.log1p(u), 1.0 / (1.0 + u)
    if name == "geman-mcclure":
        return u / (1.0 + u), 1.0 / (1.0 + u).square()
    if name == "tukey":
        v = (1.0 - u).clamp_min(0.0)
        return (1.0 - v.pow(3)) / 3.0, v.square()
    raise ValueError(f"kernel: expected one of {list(KERNELS)}, got {name!r}")


KERNELS = ("cauchy", "geman-mcclure", "tukey")


class RobustFit(NamedTuple):
    """Result of :func:`robust_eight_point`.

    E (B, 3, 3) on the essential manifold, unit Frobenius norm, float64; weights (B, N) the
    last IRLS weights wᵢ ψ(dᵢ / s²) (prior times kernel, no Sampson denominator), float64;
    inliers (B, N) bool: prior weight > 0 and dᵢ < s² at the finest scale (all prior-weighted
    matches where that leaves fewer than 5); costs (B, S, iterations + 1): C_s of the
    accepted iterate before the first and after each IRLS step of scale s (of the winning
    start); refine_costs (B, refine_steps + 1): C_s at the finest scale before and after each
    Levenberg-Marquardt step.  Both are non-increasing along their last dimension.
    """

    E: torch.Tensor
    weights: torch.Tensor
    inliers: torch.Tensor
    costs: torch.Tensor
    refine_costs: torch.Tensor


def project_essential(E: torch.Tensor) -> torch.Tensor:
    """Nearest essential matrix (singular values 1, 1, 0), unit Frobenius norm.  (B, 3, 3)."""
    U, _, Vh = torch.linalg.svd(E)
    S = E.new_tensor([1.0, 1.0, 0.0]) / 2.0**0.5
    return (U * S.unsqueeze(-2)) @ Vh


def _sampson_terms(x: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Algebraic residual r = x2ᵀ E x1 and Sampson denominator g (B, N), at least
    :data:`DENOMINATOR_FLOOR`, of x (B, N, 4); the Sampson distance is r² / g."""
    r, (a0, a1), (b0, b1) = epipolar_terms(x, E)
    return r, (a0 * a0 + a1 * a1 + b0 * b0 + b1 * b1).clamp_min(DENOMINATOR_FLOOR)


def _sampson(x: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampson distance d and its denominator g (B, N) of x (B, N, 4) under E (B, 3, 3)."""
    r, g = _sampson_terms(x, E)
    return r.square() / g, g


def _solve(x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weighted eight-point (weights v (B, N) >= 0, scaled to max 1) of the matches in ``mask``,
    projected.  (B, 3, 3)."""
    v = v / v.amax(-1, keepdim=True).clamp_min(1e-300)
    return project_essential(weighted_eight_point(x, v, validate=False, mask=mask))


def _line_search(
    x: torch.Tensor,
    w: torch.Tensor,
    s2: torch.Tensor,
    kernel: str,
    E: torch.Tensor,
    E_step: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """The best of E(α) = proj((1 - α) E + α E_step) for α in :data:`STEP_SIZES` by C_s.

    Returns E (B, 3, 3), d, g (B, N) and the cost (B,) of the best step.
    """
    sign = torch.where((E * E_step).sum((-1, -2)) < 0, -1.0, 1.0).to(E.dtype)[:, None, None]
    tries = []
    for alpha in STEP_SIZES:
        E_a = project_essential((1.0 - alpha) * E + alpha * sign * E_step)
        d, g = _sampson(x, E_a)
        tries.append((E_a, d, g, (w * _kernel(kernel, d / s2)[0]).sum(-1)))
    best = torch.stack([c for *_, c in tries]).argmin(0)
    rows = torch.arange(E.shape[0], device=E.device)
    return tuple(torch.stack(parts)[best, rows] for parts in zip(*tries))


def _tangent_basis(t: torch.Tensor) -> torch.Tensor:
    """Two unit vectors orthogonal to unit t (B, 3), as the columns of (B, 3, 2)."""
    axis = torch.eye(3, dtype=t.dtype, device=t.device)[t.abs().argmin(-1)]
    u = torch.linalg.cross(t, axis)
    u = u / u.norm(dim=-1, keepdim=True)
    return torch.stack([u, torch.linalg.cross(t, u)], -1)


def _perturb(
    R: torch.Tensor, t: torch.Tensor, basis: torch.Tensor, delta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R exp([δ₀₋₂]ₓ), normalise(t + basis δ₃₋₄)) for δ (B, 5)."""
    R = R @ torch.linalg.matrix_exp(skew(delta[:, :3], validate=False))
    t = t + (basis @ delta[:, 3:, None])[..., 0]
    return R, t / t.norm(dim=-1, keepdim=True)


def _signed_sampson(x: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """r / √g, whose square is the Sampson distance, of x (B, N, 4) under [t]ₓ R.  (B, N)."""
    r, g = _sampson_terms(x, skew(t, validate=False) @ R)
    return r / g.sqrt()


def _levenberg_marquardt(
    x: torch.Tensor, w: torch.Tensor, s2: torch.Tensor, kernel: str, E: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust Levenberg-Marquardt on the essential manifold (R, t on the sphere; 5 DOF).

    Each step solves the IRLS-weighted Gauss-Newton system of the signed Sampson residuals
    (central-difference Jacobian) with damping λ; the step is kept only where C_s decreases
    (then λ / 10, else λ x 10).  Returns the costs (B, steps + 1) before and after each
    step, and the final E (B, 3, 3), unit Frobenius norm.
    """
    R, _, t = _decompose(E)
    lam = torch.full(E.shape[:1], 1e-3, dtype=E.dtype, device=E.device)
    cost_of = lambda e: (w * _kernel(kernel, e.square() / s2)[0]).sum(-1)
    e = _signed_sampson(x, R, t)
    cost = cost_of(e)
    history = [cost]
    eye5 = torch.eye(5, dtype=E.dtype, device=E.device)
    B = len(t)
    steps10 = torch.cat([FD_STEP * eye5, -FD_STEP * eye5]).repeat_interleave(B, 0)  # (10 B, 5)
    x10 = x.repeat(10, 1, 1)
    for _ in range(steps):
        basis = _tangent_basis(t)
        e_h = _signed_sampson(
            x10, *_perturb(R.repeat(10, 1, 1), t.repeat(10, 1), basis.repeat(10, 1, 1), steps10)
        )
        e_h = e_h.reshape(2, 5, B, -1)
        J = ((e_h[0] - e_h[1]) / (2 * FD_STEP)).permute(1, 2, 0)  # (B, N, 5)
        v = w * _kernel(kernel, e.square() / s2)[1]
        A = J.transpose(-1, -2) @ (J * v[..., None])
        b = J.transpose(-1, -2) @ (v * e)[..., None]
        damping = lam[:, None, None] * (
            A.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None] + 1e-30
        )
        delta = -torch.nan_to_num(torch.linalg.solve_ex(A + damping * eye5, b)[0][..., 0])
        R_new, t_new = _perturb(R, t, basis, delta)
        e_new = _signed_sampson(x, R_new, t_new)
        cost_new = cost_of(e_new)
        ok = torch.isfinite(cost_new) & (cost_new <= cost)
        R = torch.where(ok[:, None, None], R_new, R)
        t = torch.where(ok[:, None], t_new, t)
        e = torch.where(ok[:, None], e_new, e)
        cost = torch.where(ok, cost_new, cost)
        lam = torch.where(ok, lam / 10, lam * 10)
        history.append(cost)
    return torch.stack(history, -1), skew(t, validate=False) @ R / 2.0**0.5


def _direction_grid(k: int, dim: int) -> torch.Tensor:
    """Unit directions of the integer points of {-k..k}^dim, one of each ±pair, the first
    (1, 0, ...).  A fixed, deterministic grid of the sphere (no sampling).  (G, dim) float64."""
    r = torch.arange(-k, k + 1, dtype=torch.float64)
    c = torch.cartesian_prod(*[r] * dim)
    c = c[c.abs().sum(-1) > 0]
    first = c[torch.arange(len(c)), (c != 0).int().argmax(-1)]
    c = c[first > 0]
    c = c / c.norm(dim=-1, keepdim=True)
    c = torch.unique(torch.round(c * 1e9) / 1e9, dim=0)
    axis = torch.eye(dim, dtype=torch.float64)[:1]
    return torch.cat([axis, c[(c - axis).norm(dim=-1) > 1e-9]])


NULLSPACE_GRID = _direction_grid(2, 4)
"""Coefficient directions searched in the eight-point's 4-D near-null space (G = 272)."""


def _nullspace_start(
    x: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    s2: torch.Tensor,
    kernel: str,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Best essential matrix in the 4-D near-null space of the weighted eight-point.

    The eigenvectors of the four smallest eigenvalues of XᵀVX span the matrices that fit the
    v-weighted matches best (the space the five-point solver searches); a plane of matches
    leaves a 3-D null space, where the eight-point's single eigenvector is arbitrary.  Each
    direction of :data:`NULLSPACE_GRID` gives a matrix, projected onto the essential
    manifold; the one of lowest C_s (prior weights w) wins; the first direction is the plain
    eight-point.  x (B, N, 4), v, w (B, N), s2 (B, 1), mask (B, N) bool (the floor's voters)
    -> E (B, 3, 3).
    """
    v = v / v.amax(-1, keepdim=True).clamp_min(1e-300) + WEIGHT_FLOOR * mask.double()
    X = eight_point_rows(x)
    _, V = torch.linalg.eigh(X.transpose(-1, -2) @ (X * v.unsqueeze(-1)))
    grid = NULLSPACE_GRID.to(x.device)
    B, G = x.shape[0], len(grid)
    E = project_essential((V[..., :4] @ grid.T).transpose(-1, -2).reshape(B * G, 3, 3))
    best = torch.empty(B, dtype=torch.long, device=x.device)
    for b in range(B):  # one pair at a time: G x N at most
        d, _ = _sampson(x[b].expand(G, -1, -1), E[b * G : (b + 1) * G])
        best[b] = (w[b] * _kernel(kernel, d / s2[b])[0]).sum(-1).argmin()
    return E.reshape(B, G, 3, 3)[torch.arange(B), best]


def _start_weights(weights: torch.Tensor, starts: Sequence[int | None]) -> torch.Tensor:
    """Prior weights restricted to each start's top-k matches.  (B, N) -> (H, B, N)."""
    order = torch.argsort(-weights, dim=-1, stable=True)
    rank = torch.empty_like(order).scatter_(
        -1,
        order,
        torch.arange(weights.shape[-1], device=weights.device).expand_as(order).contiguous(),
    )
    return torch.stack([weights if k is None else weights * (rank < k) for k in starts])


def robust_eight_point(
    x: torch.Tensor,
    weights: torch.Tensor,
    scales: Sequence[float] | torch.Tensor = DEFAULT_SCALES,
    kernel: str = DEFAULT_KERNEL,
    iterations: int = DEFAULT_ITERATIONS,
    starts: Sequence[int | None] = DEFAULT_STARTS,
    refine_steps: int = DEFAULT_REFINE_STEPS,
    mask: torch.Tensor | None = None,
) -> RobustFit:
    """Robust essential matrix by annealed IRLS on the eight-point (see the module docstring).

    Args:
        x: (B, N, 4) matches [x1, y1, x2, y2], normalised coordinates.
        weights: (B, N) non-negative prior weights (0 leaves a match out; padding: 0).
        scales: kernel scales s, coarse to fine, normalised units: (S,) for every pair, or a
            (B, S) tensor (for example a pixel scale divided by each pair's focal length).
        kernel: one of :data:`KERNELS`.
        iterations: IRLS eight-point steps per scale (>= 0).
        refine_steps: Levenberg-Marquardt steps at the finest scale, on the winning start.
        starts: the starting points, each the weighted eight-point on the k matches of
            largest prior weight (None: all); every start is refined, and the one with the
            lowest final cost C_s (finest scale) wins (the first on a tie).
        mask: (B, N) bool, the matches that take part (padding False, with weight 0: then a
            pair's fit does not depend on the pairs it is batched with); default all.
    Returns:
        :class:`RobustFit` of the winning start; all finite, also with fewer than eight
        positive weights or none (the weighted eight-point's floor then lets every match vote).
    """
    x = as_tensor("x", x, (None, 4), "(B, N, 4)").double()
    weights = as_tensor("weights", weights, (None,), "(B, N)").double()
    if x.ndim != 3 or weights.shape != x.shape[:2]:
        raise ValueError(
            f"x, weights: expected (B, N, 4) and (B, N), got {tuple(x.shape)} and "
            f"{tuple(weights.shape)}"
        )
    if bool((weights < 0).any()):
        raise ValueError("weights: expected non-negative values")
    if kernel not in KERNELS:
        raise ValueError(f"kernel: expected one of {list(KERNELS)}, got {kernel!r}")
    if iterations < 0 or refine_steps < 0:
        raise ValueError(
            f"iterations, refine_steps: expected >= 0, got {iterations}, {refine_steps}"
        )
    if not starts or any(k is not None and k < 1 for k in starts):
        raise ValueError(f"starts: expected positive match counts or None, got {list(starts)}")
    B, N = weights.shape
    mask = torch.ones_like(weights, dtype=torch.bool) if mask is None else mask.bool()
    if tuple(mask.shape) != (B, N) or bool((weights[~mask] != 0).any()):
        raise ValueError(
            f"mask: expected ({B}, {N}) bool with weight 0 outside it, got {tuple(mask.shape)}"
        )
    s = torch.as_tensor(scales, dtype=torch.float64, device=x.device)
    s = s.expand(B, -1) if s.ndim == 1 else s
    if s.ndim != 2 or s.shape[0] != B or s.shape[1] == 0 or not bool((s > 0).all()):
        raise ValueError(f"scales: expected positive (S,) or ({B}, S), got {tuple(s.shape)}")
    H = len(starts)
    with torch.autocast(device_type=x.device.type, enabled=False):
        xh = x.expand(H, B, N, 4).reshape(H * B, N, 4)  # start-major copies of the pairs
        w = weights.expand(H, B, N).reshape(H * B, N)
        mh = mask.expand(H, B, N).reshape(H * B, N)
        E = _nullspace_start(
            xh,
            _start_weights(weights, starts).reshape(H * B, N),
            w,
            s[:, :1].repeat(H, 1).square(),
            kernel,
            mh,
        )
        costs = []
        for k in range(s.shape[1]):
            s2 = s[:, k : k + 1].repeat(H, 1).square()
            d, g = _sampson(xh, E)
            cost = (w * _kernel(kernel, d / s2)[0]).sum(-1)
            active = torch.ones_like(cost, dtype=torch.bool)
            stage = [cost]
            for _ in range(iterations):
                psi = _kernel(kernel, d / s2)[1]
                E_new, d_new, g_new, cost_new = _line_search(
                    xh, w, s2, kernel, E, _solve(xh, w * psi / g, mh)
                )
                accept = active & (cost_new <= cost)
                E = torch.where(accept[:, None, None], E_new, E)
                d = torch.where(accept[:, None], d_new, d)
                cost = torch.where(accept, cost_new, cost)
                g = torch.where(accept[:, None], g_new, g)
                active = accept
                stage.append(cost)
            costs.append(torch.stack(stage, -1))
        best = cost.reshape(H, B).argmin(0)  # (B,)
        pick = lambda t: t.reshape(H, B, *t.shape[1:])[best, torch.arange(B)]
        E, costs = pick(E), pick(torch.stack(costs, 1))
        s2 = s[:, -1:].square()
        refine_costs, E = _levenberg_marquardt(x, weights, s2, kernel, E, refine_steps)
        d, _ = _sampson(x, E)
        u = d / s2
        final = weights * _kernel(kernel, u)[1]
        inliers = (weights > 0) & (u < 1.0)
        few = inliers.sum(-1, keepdim=True) < 5
        inliers = torch.where(few, weights > 0, inliers)
    return RobustFit(E, final, inliers, costs, refine_costs)
