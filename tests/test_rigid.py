"""Rigid 3-D geometry: weighted Kabsch, errors, rigidity checks; the rigid CorrNet's shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corrnet.geometry.rigid import (
    registration_errors,
    rigid_problem,
    rotation_error_deg,
    transform_points,
    weighted_kabsch,
)
from corrnet.models import CorrNet, CorrNetConfig
from corrnet.tasks import Rigid

from .conftest import rotation


def _problem(batch: int, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    R = rotation(torch.randn(batch, 3, generator=g, dtype=torch.float64))
    t = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    x1 = torch.randn(batch, n, 3, generator=g, dtype=torch.float64) * 2.0
    return x1, transform_points(R, t, x1), R, t


def test_kabsch_recovers_a_known_transform_exactly_and_ignores_zero_weights():
    x1, x2, R, t = _problem(4, 30)
    w = torch.rand(4, 30, dtype=torch.float64) + 0.1
    x2_bad = x2.clone()
    x2_bad[:, 20:] = torch.randn(4, 10, 3, dtype=torch.float64) * 5  # outliers, weight 0
    w_bad = w.clone()
    w_bad[:, 20:] = 0.0
    for a, b, weights in ((x1, x2, w), (x1, x2_bad, w_bad)):
        R_hat, t_hat = weighted_kabsch(a, b, weights)
        tol = 1e-10 if weights is w else 1e-6  # the weight floor 1e-9 lets outliers pull a little
        assert torch.allclose(R_hat, R, atol=tol) and torch.allclose(t_hat, t, atol=tol)
        assert torch.allclose(torch.linalg.det(R_hat), torch.ones(4, dtype=torch.float64))


def test_kabsch_never_returns_a_reflection():
    x1, x2, _, _ = _problem(1, 20, seed=3)
    mirrored = x2 * torch.tensor(
        [1.0, 1.0, -1.0], dtype=torch.float64
    )  # best orthogonal fit: det -1
    R_hat, _ = weighted_kabsch(x1, mirrored, torch.ones(1, 20, dtype=torch.float64))
    assert torch.linalg.det(R_hat).item() == pytest.approx(1.0)
    assert torch.allclose(
        R_hat @ R_hat.transpose(-1, -2), torch.eye(3, dtype=torch.float64), atol=1e-12
    )


def test_kabsch_is_differentiable():
    x1, x2, _, _ = _problem(2, 6, seed=1)
    x2 = x2 + 0.05 * torch.randn_like(x2)
    w = torch.rand(2, 6, dtype=torch.float64) + 0.2
    inputs = tuple(v.clone().requires_grad_(True) for v in (x1, x2, w))
    assert torch.autograd.gradcheck(
        lambda a, b, c: weighted_kabsch(a, b, c, validate=False), inputs
    )


def test_errors_against_closed_form():
    axis = torch.tensor([0.0, 0.6, 0.8], dtype=torch.float64)
    R = rotation(torch.deg2rad(torch.tensor(12.5, dtype=torch.float64)) * axis)
    assert rotation_error_deg(R, torch.eye(3, dtype=torch.float64)).item() == pytest.approx(
        12.5, abs=1e-9
    )
    t = torch.tensor([0.3, 0.0, 0.4], dtype=torch.float64)
    err_R, err_t, ok = registration_errors(
        R[None],
        t[None],
        torch.eye(3, dtype=torch.float64)[None],
        torch.zeros(1, 3, dtype=torch.float64),
    )
    assert err_t.item() == pytest.approx(0.5) and not ok.item()  # 50 cm > 30 cm
    assert registration_errors(R, 0.5 * t, torch.eye(3, dtype=torch.float64), torch.zeros(3))[
        2
    ].item()


def test_bad_kabsch_input_and_non_rigid_poses_get_one_line_errors():
    x1, x2, _, _ = _problem(1, 2)
    with pytest.raises(ValueError, match="expected at least 3 matches, got 2"):
        weighted_kabsch(x1, x2, torch.ones(1, 2))
    x1, x2, _, _ = _problem(1, 5)
    x1[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x1: expected finite values"):
        weighted_kabsch(x1, x2, torch.ones(1, 5))
    T = np.eye(4)
    assert rigid_problem(T) is None
    T[0, 0] = 1.2
    assert "expected a rotation" in rigid_problem(T)
    assert "last row" in rigid_problem(np.vstack([np.eye(4)[:3], [0, 0, 1, 1]]))
    assert "4x4" in rigid_problem(np.eye(3))


def test_rigid_normalisation_is_invariant_to_each_clouds_position_and_to_the_scale():
    x1, x2, _, _ = _problem(2, 40, seed=4)
    x = torch.cat([x1, x2, torch.rand(2, 40, 2, dtype=torch.float64)], -1)
    moved = torch.cat([x1 * 3 + torch.tensor([5.0, -2, 1]), x2 * 3 - 7, x[..., 6:]], -1)
    a, b = Rigid().normalise(x, None), Rigid().normalise(moved, None)
    assert torch.allclose(a, b, atol=1e-12)
    assert torch.allclose(
        a[..., :6].reshape(2, 40, 2, 3).square().sum(-1).mean((1, 2)),
        torch.ones(2, dtype=torch.float64),
    )


def test_rigid_corrnet_is_permutation_equivariant_and_outputs_a_rotation():
    torch.manual_seed(0)
    config = CorrNetConfig(
        geometry="rigid", side_info=True, width=16, blocks_per_stage=2, heads=2, num_states=4
    )
    assert config.in_channels == 8 and CorrNetConfig.from_dict(config.to_dict()) == config
    net = CorrNet(config).eval()
    x1, x2, _, _ = _problem(2, 64, seed=5)
    x = torch.cat([x1, x2, torch.rand(2, 64, 2, dtype=torch.float64)], -1).float()
    perm = torch.randperm(64)
    with torch.no_grad():
        out, out_p = net(x), net(x[:, perm])
    assert torch.allclose(out["logits"][:, perm], out_p["logits"], atol=1e-5)
    assert torch.allclose(out["R"], out_p["R"], atol=1e-5) and torch.allclose(
        out["t"], out_p["t"], atol=1e-5
    )
    assert out["R"].dtype == torch.float64 and "E" not in out
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    assert torch.allclose(out["R"] @ out["R"].transpose(-1, -2), eye, atol=1e-10)
    with pytest.raises(ValueError, match=r"expected shape \(B, N, 8\)"):
        net(x[..., :6])


def test_two_view_configs_without_geometry_still_load():
    old = CorrNetConfig().to_dict()
    del old["geometry"]
    assert CorrNetConfig.from_dict(old).geometry == "two_view"
    with pytest.raises(ValueError, match="model.net.geometry: expected one of"):
        CorrNetConfig(geometry="affine")
