"""Building blocks of CorrNet.

Features follow PointCN / OANet: a set of N correspondences with C channels is a tensor
(B, C, N, 1), so 1×1 ``Conv2d`` acts on every match independently.  Attention blocks
reshape to tokens (B, N, C) with :func:`to_3d` and back with :func:`to_4d`.

Every block is permutation-equivariant over the N matches: no block looks at the index of
a match (norms are per match or over the whole set, attention has no index encoding).

Blocks that combine matches take an optional ``mask`` (B, N) bool, True on real matches:
padded matches are left out of the instance-norm statistics, the graph (their node weight is
0) and every attention's keys, so they do not change the real matches' outputs (BatchNorm in
training mode still sees them in its batch statistics).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

QK_NORM_TEMPERATURE = 10.0
"""Softmax scale for attention with qk-RMSNorm.

With unit-norm queries and keys, q·k lies in [-1, 1]; the usual 1/√d scale would leave the
softmax almost uniform, so the normalised logits are multiplied by this fixed temperature
(and by the learned per-channel scales, initialised to one)."""


def to_3d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, N, 1) features -> (B, N, C) tokens."""
    return rearrange(x, "b c n 1 -> b n c")


def to_4d(x: torch.Tensor) -> torch.Tensor:
    """(B, N, C) tokens -> (B, C, N, 1) features."""
    return rearrange(x, "b n c -> b c n 1")


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """Unit vectors along the last dimension (zero vectors stay zero)."""
    return F.normalize(x, dim=-1)


class PointwiseConv(nn.Conv2d):
    """1×1 ``Conv2d`` on (B, C_in, N, 1) -> (B, C_out, N, 1), computed as one batched matrix
    product with the bias fused (``baddbmm``).

    Same parameters and state-dict keys as ``nn.Conv2d(C_in, C_out, 1)``, faster than the
    CPU convolution kernel (docs/network.md).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.view(self.out_channels, self.in_channels)
        out = torch.baddbmm(self.bias.view(-1, 1), weight.expand(x.shape[0], -1, -1), x.squeeze(-1))
        return out.unsqueeze(-1)


def graph_weights(w: torch.Tensor) -> torch.Tensor:
    """Node weights a = relu(tanh(w)) in [0, 1).  (B, N) logits -> (B, N)."""
    return torch.relu(torch.tanh(w))


def laplacian_aggregate(
    x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """L x with L = D^-1/2 (a aᵀ + I) D^-1/2, a = relu(tanh(w)), D = diag((a aᵀ + I) 1).

    The graph is rank one plus identity, so L x is computed in O(N·C) without the N×N
    matrix: the degrees are dᵢ = aᵢ Σⱼ aⱼ + 1 and
    L x = D^-1/2 (a (aᵀ D^-1/2 x) + D^-1/2 x).

    Args:
        x: (B, C, N, 1) features.
        w: (B, N) logits of the current inlier estimate.
        mask: (B, N) bool, True on real matches; a padded match gets a = 0 (no edges, so it
            changes no degree and no real match's output).
    Returns:
        (B, C, N, 1) aggregated features.
    """
    a = graph_weights(w).to(x.dtype)  # (B, N)
    if mask is not None:
        a = a * mask.to(a.dtype)
    d_inv_sqrt = torch.rsqrt(a * a.sum(-1, keepdim=True) + 1.0)  # (B, N), degrees >= 1
    y = x.squeeze(-1) * d_inv_sqrt.unsqueeze(1)  # D^-1/2 x, (B, C, N)
    pooled = torch.einsum("bcn,bn->bc", y, a)  # aᵀ D^-1/2 x, (B, C)
    out = (pooled.unsqueeze(-1) * a.unsqueeze(1) + y) * d_inv_sqrt.unsqueeze(1)
    return out.unsqueeze(-1)


class GraphLaplacian(nn.Module):
    """Spectral graph layer of CLNet: out = conv(L x) (+ x when ``residual``).

    ``residual=True`` is the GS form x + conv(L x), ``residual=False`` the GCN form conv(L x);
    conv is a 1×1 Conv2d, BatchNorm and ReLU.  L is not computed under ``torch.no_grad``:
    gradients flow through the weights w (with the O(N·C) form the backward pass costs no N×N
    memory), but relu(tanh(.)) blocks them for matches with w <= 0, so this path alone cannot
    reopen a closed gate: CorrNet also supervises w directly as an inlier logit (CLNet
    supervises its consensus scores the same way) and initialises it open.

    x (B, C, N, 1), w (B, N), optional mask (B, N) bool -> (B, C, N, 1).
    """

    def __init__(self, channels: int, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.conv = nn.Sequential(
            PointwiseConv(channels, channels), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.conv(laplacian_aggregate(x, w, mask))
        return x + out if self.residual else out


class MatchNorm(nn.Module):
    """Instance normalisation over the matches, no parameters: ``InstanceNorm2d``'s output.

    Computed as ``group_norm`` with one group per channel of x - x[:, :, :1] (the norm is
    shift-invariant): ~5x faster than ``InstanceNorm2d`` on the CPU, and the shift by one match
    keeps the float32 statistics accurate when a channel's mean is large against its spread.
    With a mask, mean and (biased) variance are taken over the real matches only (two passes).
    (B, C, N, 1), optional mask (B, N) bool -> (B, C, N, 1).
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            x = x.contiguous()
            return F.group_norm(x - x[:, :, :1], x.shape[1], eps=self.eps)
        m = rearrange(mask, "b n -> b 1 n 1").to(x.dtype)
        count = m.sum(2, keepdim=True)
        centred = x - (x * m).sum(2, keepdim=True) / count
        var = (centred.square() * m).sum(2, keepdim=True) / count
        return centred * torch.rsqrt(var + self.eps)


class PointCN(nn.Module):
    """OANet's residual context-normalisation block on (B, C, N, 1).

    Twice (InstanceNorm over the matches, BatchNorm, ReLU, 1×1 conv), plus a 1×1 shortcut
    when the width changes.  (B, C_in, N, 1), optional mask (B, N) bool -> (B, C_out, N, 1).
    """

    def __init__(self, channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.shortcut = (
            nn.Identity() if out_channels == channels else PointwiseConv(channels, out_channels)
        )
        self.body = nn.Sequential(
            MatchNorm(eps=1e-3),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            PointwiseConv(channels, out_channels),
            MatchNorm(eps=1e-3),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            PointwiseConv(out_channels, out_channels),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out, mask) if isinstance(layer, MatchNorm) else layer(out)
        return self.shortcut(x) + out


class GeometricRotary(nn.Module):
    """Rotary embedding of the 4-D match coordinates (LightGlue's idea for keypoints).

    Each head channel pair (2i, 2i+1) is rotated by the angle θᵢ = fᵢ · [x1, y1, x2, y2]
    with learned frequencies fᵢ, so q·k depends on the coordinates of both matches, never
    on their index.  coords (B, N, 4) -> angles (B, 1, N, dim_head/2).
    """

    def __init__(self, dim_head: int, in_dim: int = 4, gamma: float = 1.0) -> None:
        super().__init__()
        if dim_head % 2:
            raise ValueError(f"dim_head: expected an even number for rotary, got {dim_head}")
        self.freqs = nn.Linear(in_dim, dim_head // 2, bias=False)
        nn.init.normal_(self.freqs.weight, std=gamma**-2)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        with torch.autocast(coords.device.type, enabled=False):  # angles in float32
            return self.freqs(coords.to(self.freqs.weight.dtype)).unsqueeze(1)

    @staticmethod
    def rotate(t: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Rotate channel pairs of t (B, H, N, D) by angles (B, 1, N, D/2)."""
        t = rearrange(t, "... (d r) -> ... d r", r=2)
        cos, sin = angles.cos().to(t.dtype), angles.sin().to(t.dtype)
        x, y = t.unbind(-1)
        return rearrange(
            torch.stack([x * cos - y * sin, x * sin + y * cos], -1), "... d r -> ... (d r)"
        )


class Attention(nn.Module):
    """Multi-head attention of queries x over a context, via ``scaled_dot_product_attention``.

    With ``qk_rmsnorm`` queries and keys are l2-normalised per head, multiplied by learned
    per-channel scales and the softmax uses :data:`QK_NORM_TEMPERATURE`.

    x (B, N, C), context (B, M, C) -> (B, N, C); optional rotary angles (B, 1, N|M, D/2) and
    ``context_mask`` (B, M) bool (False: a key no query attends to; each row needs one True).
    """

    def __init__(self, dim: int, heads: int, qk_rmsnorm: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim: expected a multiple of heads={heads}, got {dim}")
        self.heads, dim_head = heads, dim // heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.qk_rmsnorm = qk_rmsnorm
        if qk_rmsnorm:
            self.q_scale = nn.Parameter(torch.ones(dim_head))
            self.k_scale = nn.Parameter(torch.ones(dim_head))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        q_angles: torch.Tensor | None = None,
        k_angles: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b m (kv h d) -> kv b h m d", kv=2, h=self.heads)
        scale = None
        if self.qk_rmsnorm:
            q = (l2norm(q) * self.q_scale).type_as(v)
            k = (l2norm(k) * self.k_scale).type_as(v)
            scale = QK_NORM_TEMPERATURE
        if q_angles is not None:
            q = GeometricRotary.rotate(q, q_angles)
        if k_angles is not None:
            k = GeometricRotary.rotate(k, k_angles)
        attn_mask = None if context_mask is None else rearrange(context_mask, "b m -> b 1 1 m")
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class FeedForward(nn.Sequential):
    """Pre-LayerNorm MLP, (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, mult: int = 2) -> None:
        super().__init__(
            nn.LayerNorm(dim), nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim)
        )


class StateCrossAttention(nn.Module):
    """M state vectors read from the matches, then the matches read from the states.

    Sequential cross-attention: the states first attend to all matches
    (summarising the set), then every match attends to the updated states, so global
    context reaches each match at O(N·M) cost.  The states carry no positional encoding (the
    M slots are distinguished by their learned initial values) and are passed from stage to
    stage by the caller.

    x (B, C, N, 1), states (B, M, C), optional mask (B, N) bool (the states read only the real
    matches) -> x (B, C, N, 1), states (B, M, C).
    """

    def __init__(self, dim: int, heads: int, qk_rmsnorm: bool = True) -> None:
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.norm_state = nn.LayerNorm(dim)
        self.read = Attention(dim, heads, qk_rmsnorm)
        self.state_ff = FeedForward(dim)
        self.write = Attention(dim, heads, qk_rmsnorm)

    def forward(
        self, x: torch.Tensor, states: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = to_3d(x)
        normed = self.norm_x(tokens)
        states = states + self.read(self.norm_state(states), normed, context_mask=mask)
        states = states + self.state_ff(states)
        tokens = tokens + self.write(normed, self.norm_state(states))
        return to_4d(tokens), states


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer (self-attention, then MLP) on (B, C, N, 1).

    Every match is a query.  The keys/values are all N matches (O(N²) time; memory O(N) with
    the fused SDPA kernels) or, given ``keys`` (B, K) match indices, only those K (O(N·K)).
    Optional rotary angles (B, 1, N, D/2) from :class:`GeometricRotary`; optional ``mask``
    (B, N) bool: padded matches are never keys.
    """

    def __init__(self, dim: int, heads: int, qk_rmsnorm: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qk_rmsnorm)
        self.ff = FeedForward(dim)

    def forward(
        self,
        x: torch.Tensor,
        angles: torch.Tensor | None = None,
        keys: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        tokens = to_3d(x)
        normed = self.norm(tokens)
        context, key_angles, key_mask = normed, angles, mask
        if keys is not None:
            context = normed.gather(1, repeat(keys, "b k -> b k c", c=normed.shape[-1]))
            if angles is not None:
                key_angles = angles.gather(2, repeat(keys, "b k -> b 1 k d", d=angles.shape[-1]))
            if mask is not None:
                key_mask = mask.gather(1, keys)
        tokens = tokens + self.attn(normed, context, angles, key_angles, key_mask)
        tokens = tokens + self.ff(tokens)
        return to_4d(tokens)
