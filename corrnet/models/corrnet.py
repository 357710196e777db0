"""CorrNet: staged correspondence pruning with graph, state and transformer blocks.

Input: N putative matches of one image pair, (B, 1, N, C) with C = 4 ([x1, y1, x2, y2] in
normalised camera coordinates) or more channels whose first four are the coordinates
(e.g. ratio test, mutual check).  Each stage scores its matches with a logit (inlier when
> 0); between stages the matches with the highest logits are kept (CLNet / NCMNet pruning),
so later, costlier blocks see fewer matches.  The essential matrix is the weighted
eight-point estimate on the last stage's matches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from einops import rearrange, repeat
from torch import nn

from corrnet.geometry import weighted_eight_point

from .blocks import (GeometricRotary, GraphLaplacian, PointCN, PointwiseConv,
                     StateCrossAttention, TransformerBlock, graph_weights)

MIN_MATCHES = 8
"""Fewest matches a stage keeps: the eight-point estimate needs eight."""


def gather_matches(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Matches ``index`` (B, K) of features x (B, C, N, 1) -> (B, C, K, 1)."""
    return x.gather(2, repeat(index, "b k -> b c k 1", c=x.shape[1]))


class Stage(nn.Module):
    """One pruning stage on (B, C_in, N, 1) features.

    embed (1×1 conv) -> PointCN blocks -> graph Laplacian layer driven by an intermediate
    logit head -> state cross-attention -> [transformer] -> PointCN blocks -> logit head.
    The transformer's keys are the ``attention_keys`` matches with the highest graph logits
    (all matches when there are no more than that, or when it is None).

    forward: features (B, C_in, N, 1), coords (B, N, 4), states (B, M, W)
    -> features (B, W, N, 1), logits (B, N), states (B, M, W).
    """

    def __init__(self, in_channels: int, width: int, blocks: int, heads: int,
                 qk_rmsnorm: bool, attention: bool, rotary: bool,
                 attention_keys: int | None) -> None:
        super().__init__()
        self.attention_keys = attention_keys
        self.embed = PointwiseConv(in_channels, width)
        self.pre = nn.Sequential(*(PointCN(width) for _ in range(blocks // 2)))
        self.graph_head = PointwiseConv(width, 1)
        self.graph = GraphLaplacian(width, residual=True)
        self.state = StateCrossAttention(width, heads, qk_rmsnorm)
        self.transformer = TransformerBlock(width, heads, qk_rmsnorm) if attention else None
        self.rotary = GeometricRotary(width // heads) if attention and rotary else None
        self.post = nn.Sequential(*(PointCN(width) for _ in range(blocks - blocks // 2)))
        self.head = PointwiseConv(width, 1)

    def forward(self, x: torch.Tensor, coords: torch.Tensor,
                states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pre(self.embed(x))
        w = rearrange(self.graph_head(x), "b 1 n 1 -> b n")
        x = self.graph(x, w)
        x, states = self.state(x, states)
        if self.transformer is not None:
            angles = self.rotary(coords) if self.rotary is not None else None
            keys = None
            if self.attention_keys is not None and w.shape[-1] > self.attention_keys:
                keys = torch.topk(w.detach(), self.attention_keys, dim=-1, sorted=False).indices
            x = self.transformer(x, angles, keys)
        x = self.post(x)
        return x, rearrange(self.head(x), "b 1 n 1 -> b n"), states


class CorrNet(nn.Module):
    """Correspondence pruning network.

    Args:
        in_channels: channels per match, C >= 4; the first four are [x1, y1, x2, y2].
        width: feature channels W.
        num_stages: pruning stages; stage s sees about N · prune_ratio^s matches.
        blocks_per_stage: PointCN blocks per stage (split around the graph/state blocks).
        heads: attention heads (W must be a multiple).
        num_states: learned state vectors M, carried from stage to stage.
        prune_ratio: fraction of matches kept between stages (at least eight are kept).
        qk_rmsnorm: l2-normalise queries and keys with learned scales in all attention.
        rotary: rotary embedding of the 4-D coordinates in the transformer blocks.
        attention_stages: stages (negative indices count from the end) with a
            self-attention transformer block; default the last, smallest one.
        attention_keys: most matches a transformer block attends to (its keys/values: the
            stage's matches with the highest graph logits; every match stays a query), so its
            cost is O(N·attention_keys) instead of O(N²); None attends to all.
    """

    def __init__(self, in_channels: int = 4, width: int = 128, num_stages: int = 2,
                 blocks_per_stage: int = 4, heads: int = 4, num_states: int = 16,
                 prune_ratio: float = 0.5, qk_rmsnorm: bool = True, rotary: bool = True,
                 attention_stages: Sequence[int] = (-1,),
                 attention_keys: int | None = 1024) -> None:
        super().__init__()
        if in_channels < 4:
            raise ValueError(f"in_channels: expected >= 4 ([x1, y1, x2, y2] first), got {in_channels}")
        if num_stages < 1:
            raise ValueError(f"num_stages: expected >= 1, got {num_stages}")
        if not 0.0 < prune_ratio <= 1.0:
            raise ValueError(f"prune_ratio: expected a value in (0, 1], got {prune_ratio}")
        if attention_keys is not None and attention_keys < 1:
            raise ValueError(f"attention_keys: expected None or a positive count, got {attention_keys}")
        attend = {s % num_stages for s in attention_stages}
        self.in_channels = in_channels
        self.prune_ratio = prune_ratio
        self.states = nn.Parameter(torch.randn(num_states, width) * width ** -0.5)
        # Stage s >= 1 sees the previous stage's features, the raw input and its logit.
        self.stages = nn.ModuleList(
            Stage(in_channels if s == 0 else width + in_channels + 1, width, blocks_per_stage,
                  heads, qk_rmsnorm, s in attend, rotary, attention_keys)
            for s in range(num_stages))

    def num_kept(self, n: int) -> int:
        """Matches kept out of n when pruning: ceil(ratio · n), at least eight (or all n)."""
        return min(n, max(MIN_MATCHES, math.ceil(self.prune_ratio * n)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Score every match and estimate the essential matrix.

        Args:
            x: (B, 1, N, C) matches, N >= 8.
        Returns:
            ``logits`` (B, N): inlier logits of every input match (a pruned match keeps the
            logits of the last stage that saw it); ``stage_logits``: list of (B, N_s);
            ``stage_indices``: list of (B, N_s) long indices into the N input matches;
            ``weights`` (B, N): relu(tanh(logits)) on the last stage's matches, 0 on pruned
            ones; ``E`` (B, 3, 3): weighted eight-point estimate from those weights (float32).
        """
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[-1] != self.in_channels:
            raise ValueError(f"x: expected shape (B, 1, N, {self.in_channels}), got {tuple(x.shape)}")
        b, _, n, _ = x.shape
        if n < MIN_MATCHES:
            raise ValueError(f"x: expected at least {MIN_MATCHES} matches, got {n}")
        raw = rearrange(x, "b 1 n c -> b c n 1")
        coords = x[:, 0, :, :4]
        index = torch.arange(n, device=x.device).expand(b, n)
        states = repeat(self.states, "m w -> b m w", b=b)
        feats = raw
        stage_logits, stage_indices = [], []
        for s, stage in enumerate(self.stages):
            if s > 0:
                # Stable sort: deterministic, ties broken by the current order.
                order = torch.sort(logits.detach(), dim=-1, descending=True,
                                   stable=True).indices[:, :self.num_kept(logits.shape[-1])]
                index = index.gather(1, order)
                feats = torch.cat([gather_matches(feats, order), gather_matches(raw, index),
                                   rearrange(logits.gather(1, order), "b k -> b 1 k 1").to(feats.dtype)], 1)
            feats, logits, states = stage(feats, coords.gather(1, repeat(index, "b k -> b k 4")), states)
            stage_logits.append(logits)
            stage_indices.append(index)

        full = stage_logits[0]
        for idx, lg in zip(stage_indices[1:], stage_logits[1:]):
            full = full.scatter(1, idx, lg.to(full.dtype))
        weights = graph_weights(logits.float())
        final_coords = coords.float().gather(1, repeat(index, "b k -> b k 4"))
        E = weighted_eight_point(final_coords, weights, validate=False)
        return {"logits": full, "stage_logits": stage_logits, "stage_indices": stage_indices,
                "weights": torch.zeros_like(full, dtype=torch.float32).scatter(1, index, weights),
                "E": E}
