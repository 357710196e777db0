"""Building blocks against dense float64 references and closed forms."""

from __future__ import annotations

import pytest
import torch

from corrnet.models import (
    Attention,
    GeometricRotary,
    GraphLaplacian,
    PointCN,
    StateCrossAttention,
    TransformerBlock,
    laplacian_aggregate,
    to_3d,
    to_4d,
)
from corrnet.models.blocks import QK_NORM_TEMPERATURE


def dense_laplacian(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Reference: L = D^-1/2 (a aᵀ + I) D^-1/2 as an explicit N×N matrix."""
    a = torch.relu(torch.tanh(w)).unsqueeze(-1)
    A = a @ a.transpose(1, 2) + torch.eye(w.shape[1], dtype=w.dtype)
    D = torch.diag_embed(A.sum(-1) ** -0.5)
    L = D @ A @ D
    return (L @ x.squeeze(-1).transpose(1, 2)).transpose(1, 2).unsqueeze(-1)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 513])
@pytest.mark.parametrize("zero_w", [False, True])
def test_laplacian_fast_form_matches_dense(n, zero_w):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, 5, n, 1, generator=g, dtype=torch.float64)
    w = (
        torch.zeros(3, n, dtype=torch.float64)
        if zero_w
        else 2 * torch.randn(3, n, generator=g, dtype=torch.float64)
    )
    fast, dense = laplacian_aggregate(x, w), dense_laplacian(x, w)
    assert ((fast - dense).norm() / dense.norm()) < 1e-10
    if zero_w:  # A = I: L is the identity
        assert torch.equal(fast, x)


def test_laplacian_gradient_wrt_weights_and_features():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 1, generator=g, dtype=torch.float64, requires_grad=True)
    w = (
        torch.rand(2, 6, generator=g, dtype=torch.float64) + 0.1
    ).requires_grad_()  # away from the relu kink
    assert torch.autograd.gradcheck(laplacian_aggregate, (x, w))
    # The same gradient as the dense formula.
    gf = torch.autograd.grad(laplacian_aggregate(x, w).square().sum(), (x, w))
    gd = torch.autograd.grad(dense_laplacian(x, w).square().sum(), (x, w))
    for a, b in zip(gf, gd):
        assert torch.allclose(a, b, atol=1e-12)


def test_gs_and_gcn_share_one_layer():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 30, 1, generator=g, dtype=torch.float64)
    w = torch.randn(2, 30, generator=g, dtype=torch.float64)
    gs = GraphLaplacian(8, residual=True).double().eval()
    gcn = GraphLaplacian(8, residual=False).double().eval()
    gcn.load_state_dict(gs.state_dict())
    expected = gs.conv(dense_laplacian(x, w))
    assert torch.allclose(gcn(x, w), expected, atol=1e-12)
    assert torch.allclose(gs(x, w), x + expected, atol=1e-12)


def test_to_3d_to_4d_round_trip():
    x = torch.randn(2, 6, 11, 1)
    t = to_3d(x)
    assert t.shape == (2, 11, 6) and torch.equal(t[1, 4], x[1, :, 4, 0])
    assert torch.equal(to_4d(t), x)


def reference_attention(attn: Attention, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """Explicit softmax(q kᵀ · scale) v per head, float64."""
    h, d = attn.heads, x.shape[-1] // attn.heads
    q = attn.to_q(x).unflatten(-1, (h, d)).transpose(1, 2)
    k, v = (t.unflatten(-1, (h, d)).transpose(1, 2) for t in attn.to_kv(ctx).chunk(2, -1))
    if attn.qk_rmsnorm:
        q = q / q.norm(dim=-1, keepdim=True) * attn.q_scale
        k = k / k.norm(dim=-1, keepdim=True) * attn.k_scale
        scale = QK_NORM_TEMPERATURE
    else:
        scale = d**-0.5
    p = torch.softmax(q @ k.transpose(-1, -2) * scale, -1)
    return attn.to_out((p @ v).transpose(1, 2).flatten(-2))


@pytest.mark.parametrize("qk_rmsnorm", [False, True])
def test_attention_matches_explicit_softmax(qk_rmsnorm):
    torch.manual_seed(0)
    attn = Attention(16, heads=4, qk_rmsnorm=qk_rmsnorm).double()
    if qk_rmsnorm:
        with torch.no_grad():
            attn.q_scale.uniform_(0.5, 2.0)
    x, ctx = torch.randn(2, 9, 16, dtype=torch.float64), torch.randn(2, 5, 16, dtype=torch.float64)
    assert torch.allclose(attn(x, ctx), reference_attention(attn, x, ctx), atol=1e-12)


def test_rotary_is_relative_and_norm_preserving():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 1, 3, 1, 8, generator=g, dtype=torch.float64)
    th, ph = torch.randn(2, 1, 1, 1, 4, generator=g, dtype=torch.float64)
    rot = GeometricRotary.rotate
    assert torch.allclose(rot(q, th).norm(dim=-1), q.norm(dim=-1), atol=1e-12)
    lhs = (rot(q, th) * rot(k, ph)).sum(-1)
    assert torch.allclose(lhs, (q * rot(k, ph - th)).sum(-1), atol=1e-12)
    # Angles are linear in the coordinates: shifting both matches by the same offset
    # leaves every q·k unchanged.
    enc = GeometricRotary(8).double()
    c = torch.randn(1, 6, 4, generator=g, dtype=torch.float64)
    shift = torch.randn(1, 1, 4, generator=g, dtype=torch.float64)
    qs, ks = torch.randn(2, 1, 2, 6, 8, generator=g, dtype=torch.float64)
    dots = lambda cc: rot(qs, enc(cc)) @ rot(ks, enc(cc)).transpose(-1, -2)
    assert torch.allclose(dots(c), dots(c + shift), atol=1e-10)


def test_blocks_are_permutation_equivariant():
    torch.manual_seed(3)
    x, coords = torch.randn(2, 16, 40, 1), torch.randn(2, 40, 4)
    perm = torch.randperm(40)
    states = torch.randn(2, 5, 16)
    state = StateCrossAttention(16, heads=2).eval()
    y, s = state(x, states)
    yp, sp = state(x[:, :, perm], states)
    assert torch.allclose(yp, y[:, :, perm], atol=1e-5) and torch.allclose(sp, s, atol=1e-5)
    block, rope = TransformerBlock(16, heads=2).eval(), GeometricRotary(8)
    out = block(x, rope(coords))
    assert torch.allclose(block(x[:, :, perm], rope(coords[:, perm])), out[:, :, perm], atol=1e-5)
    cn = PointCN(16, 24).eval()
    assert torch.allclose(cn(x[:, :, perm]), cn(x)[:, :, perm], atol=1e-5)
    assert cn(x).shape == (2, 24, 40, 1)


def test_transformer_with_key_subset_attends_only_to_those_keys():
    torch.manual_seed(4)
    block, rope = TransformerBlock(16, heads=2).double().eval(), GeometricRotary(8).double()
    x, coords = (
        torch.randn(2, 16, 30, 1, dtype=torch.float64),
        torch.randn(2, 30, 4, dtype=torch.float64),
    )
    angles = rope(coords)
    full = block(x, angles)
    assert torch.allclose(block(x, angles, torch.arange(30).expand(2, 30)), full, atol=1e-12)
    keys = torch.stack([torch.randperm(30)[:7] for _ in range(2)])
    out = block(x, angles, keys)
    assert not torch.allclose(out, full, atol=1e-3)
    # The key matches attend to exactly the key set: the same as self-attention on it alone.
    for b in range(2):
        alone = block(x[b : b + 1, :, keys[b]], angles[b : b + 1, :, keys[b]])
        assert torch.allclose(out[b : b + 1, :, keys[b]], alone, atol=1e-12)
