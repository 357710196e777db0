"""CorrNet: staged correspondence pruning with graph, state and transformer blocks.

Input: N putative matches per image pair, (B, N, C) with C = 4 ([x1, y1, x2, y2] in
normalised camera coordinates) or more channels whose first four are the coordinates
(e.g. ratio test, mutual check), and an optional mask (B, N) of real (not padded) matches.
Per-match outputs are (B, N) in the input's order.  Each stage scores its matches with a
logit (inlier when > 0); between stages the matches with the highest logits are kept
(CLNet / NCMNet pruning), so later, costlier blocks see fewer matches.  The essential matrix
is the weighted eight-point estimate on the last stage's matches.  Internally features are
(B, W, N, 1) as in PointCN / OANet.  The config's task (:mod:`corrnet.tasks`) sets the
coordinates, their normalisation and the head: for 3-D registration the matches are
[x1, y1, z1, x2, y2, z2] in metres and the head is the weighted Kabsch transform.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import torch
from einops import rearrange, repeat
from torch import nn

from corrnet.channels import channel_count, side_info_channels
from corrnet.errors import UserError
from corrnet.tasks import TASKS, Task

from .blocks import (
    GeometricRotary,
    GraphLaplacian,
    PointCN,
    PointwiseConv,
    StateCrossAttention,
    TransformerBlock,
    graph_weights,
)

MIN_MATCHES = 8
"""Fewest matches a stage keeps: the eight-point estimate needs eight."""

GRAPH_GATE_BIAS = 1.0
"""Initial bias of each stage's graph head: w ≈ 1 ± its spread at initialisation, so the gate
a = relu(tanh(w)) starts open for nearly every match (docs/network.md); a closed gate (w <= 0)
passes no gradient through the graph, and the classification of w
(:class:`~corrnet.models.CorrNetLoss`) then closes it on outliers."""


def gather_matches(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Matches ``index`` (B, K) of features x (B, C, N, 1) -> (B, C, K, 1)."""
    return x.gather(2, repeat(index, "b k -> b c k 1", c=x.shape[1]))


class Stage(nn.Module):
    """One pruning stage on (B, C_in, N, 1) features.

    embed (1×1 conv) -> PointCN blocks -> graph Laplacian layer driven by an intermediate
    logit head w (supervised as an inlier logit, opened at initialisation: see
    :data:`GRAPH_GATE_BIAS`; ``graph_layer=False`` drops the layer and keeps the head)
    -> state cross-attention -> [transformer] -> PointCN blocks -> logit head.
    The transformer's keys are the ``attention_keys`` real matches with the highest graph
    logits (all matches when there are no more than that, or when it is None).

    forward: features (B, C_in, N, 1), coords (B, N, ``coords``), states (B, M, W), optional mask
    (B, N) bool of real matches -> features (B, W, N, 1), logits (B, N), graph logits w (B, N),
    states (B, M, W).
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        blocks: int,
        heads: int,
        qk_rmsnorm: bool,
        attention: bool,
        rotary: bool,
        attention_keys: int | None,
        graph_layer: bool = True,
        coords: int = 4,
    ) -> None:
        super().__init__()
        self.attention_keys = attention_keys
        self.embed = PointwiseConv(in_channels, width)
        self.pre = nn.Sequential(*(PointCN(width) for _ in range(blocks // 2)))
        self.graph_head = PointwiseConv(width, 1)
        self.reset_graph_head()
        self.graph = GraphLaplacian(width, residual=True) if graph_layer else None
        self.state = StateCrossAttention(width, heads, qk_rmsnorm)
        self.transformer = TransformerBlock(width, heads, qk_rmsnorm) if attention else None
        self.rotary = GeometricRotary(width // heads, coords) if attention and rotary else None
        self.post = nn.Sequential(*(PointCN(width) for _ in range(blocks - blocks // 2)))
        self.head = PointwiseConv(width, 1)

    def reset_graph_head(self) -> None:
        """Fresh weights for the graph head, gate open (bias :data:`GRAPH_GATE_BIAS`)."""
        self.graph_head.reset_parameters()
        nn.init.constant_(self.graph_head.bias, GRAPH_GATE_BIAS)

    def forward(
        self,
        x: torch.Tensor,
        coords: torch.Tensor,
        states: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.embed(x)
        for block in self.pre:
            x = block(x, mask)
        w = rearrange(self.graph_head(x), "b 1 n 1 -> b n")
        if self.graph is not None:
            x = self.graph(x, w, mask)
        x, states = self.state(x, states, mask)
        if self.transformer is not None:
            angles = self.rotary(coords) if self.rotary is not None else None
            keys = None
            if self.attention_keys is not None and w.shape[-1] > self.attention_keys:
                score = w.detach() if mask is None else w.detach().masked_fill(~mask, -torch.inf)
                keys = torch.topk(score, self.attention_keys, dim=-1, sorted=False).indices
            x = self.transformer(x, angles, keys, mask)
        for block in self.post:
            x = block(x, mask)
        return x, rearrange(self.head(x), "b 1 n 1 -> b n"), w, states


@dataclass(frozen=True)
class CorrNetConfig:
    """CorrNet's architecture, as ``model.net`` in the training configs (``configs/model/*.yaml``).

    Args:
        side_info: the named input channels after the coordinates, in order (names of
            :data:`corrnet.channels.CHANNELS`: ``ratio``, ``mutual``, ``log_scale_ratio``,
            ``orientation`` (2 columns), ``descriptor_distance``); ``True`` is
            ``["ratio", "mutual"]`` (C = 6, ``[x1, y1, x2, y2, ratio, mutual]``) and ``False``
            none (C = 4); a task may accept fewer (rigid: after six coordinates, ratio and
            mutual only).
            The data's ``side_info`` follows from this setting (:attr:`channels`).
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
        graph_layer: the graph Laplacian layer in every stage.  False is the ablation of
            docs/network.md: no Laplacian, the graph head is still supervised and still ranks
            the attention keys, so only the graph propagation is removed.
        geometry: the name of the task (:data:`corrnet.tasks.TASKS`): ``two_view`` (4
            coordinates, essential matrix) or ``rigid`` (3-D matches, 6 coordinates before the
            side information, weighted Kabsch R, t); see :attr:`task`.
    """

    side_info: bool | Sequence[str] = False
    width: int = 128
    num_stages: int = 2
    blocks_per_stage: int = 4
    heads: int = 4
    num_states: int = 16
    prune_ratio: float = 0.5
    qk_rmsnorm: bool = True
    rotary: bool = True
    attention_stages: tuple[int, ...] = (-1,)
    attention_keys: int | None = 1024
    graph_layer: bool = True
    geometry: str = "two_view"

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention_stages", tuple(self.attention_stages))
        if not isinstance(self.side_info, (bool, str)):
            object.__setattr__(self, "side_info", tuple(self.side_info))
        channels = side_info_channels(self.side_info, "model.net.side_info")
        checks = {
            "width": (self.width >= 1, "a positive count"),
            "num_stages": (self.num_stages >= 1, "a positive count"),
            "blocks_per_stage": (self.blocks_per_stage >= 0, "a count >= 0"),
            "heads": (
                self.heads >= 1 and self.width % self.heads == 0,
                f"a positive divisor of width={self.width}",
            ),
            "num_states": (self.num_states >= 1, "a positive count"),
            "prune_ratio": (0.0 < self.prune_ratio <= 1.0, "a value in (0, 1]"),
            "attention_stages": (
                all(-self.num_stages <= i < self.num_stages for i in self.attention_stages),
                f"stage indices in [-{self.num_stages}, {self.num_stages})",
            ),
            "attention_keys": (
                self.attention_keys is None or self.attention_keys >= 1,
                "None or a positive count",
            ),
            "geometry": (self.geometry in TASKS, f"one of {sorted(TASKS)}"),
        }
        task = TASKS.get(self.geometry)
        if task is not None and not task.accepts(channels):
            checks["side_info"] = (
                False,
                f"channels of {task.pairs} (some of {list(task.channels or ())}) with "
                f"geometry {task.name}",
            )
        for name, (ok, expected) in checks.items():
            if not ok:
                raise UserError(
                    f"model.net.{name}: expected {expected}, got {getattr(self, name)!r}"
                )

    @property
    def task(self) -> Task:
        """The task named by :attr:`geometry`."""
        return TASKS[self.geometry]

    @property
    def channels(self) -> tuple[str, ...]:
        """The names of the input channels after the coordinates (``side_info`` resolved)."""
        return side_info_channels(self.side_info)

    @property
    def in_channels(self) -> int:
        """Channels per input match: the task's coordinates (4, or 6 for rigid) and those of
        :attr:`channels`."""
        return self.task.coords + channel_count(self.side_info)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, no tuples) for checkpoints and YAML."""
        d = dataclasses.asdict(self)
        d["attention_stages"] = list(self.attention_stages)
        if not isinstance(self.side_info, bool):
            d["side_info"] = list(self.side_info)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "model.net") -> CorrNetConfig:
        """A config from plain data; ``source`` names where it came from in errors.

        Also reads the first format (corrnet 0.1, ``format_version`` 1): ``in_channels`` 4
        or 6 instead of ``side_info``.  An unknown key is a ValueError naming it.
        """
        d = dict(d)
        if "in_channels" in d:
            if "side_info" in d or d["in_channels"] not in (4, 6):
                raise UserError(
                    f"{source}: format_version 1 configuration with in_channels="
                    f"{d['in_channels']!r}: only 4 or 6 (without side_info) convert"
                )
            d["side_info"] = d.pop("in_channels") == 6
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise UserError(
                f"{source}: unknown key(s) {unknown}; expected some of {sorted(fields)}"
            )
        return cls(**d)


class CorrNet(nn.Module):
    """Correspondence pruning network of a :class:`CorrNetConfig` (default: its defaults)."""

    def __init__(self, config: CorrNetConfig | None = None) -> None:
        super().__init__()
        config = config or CorrNetConfig()
        self.config = config
        self.in_channels = config.in_channels
        self.prune_ratio = config.prune_ratio
        self.task = config.task
        width, c_in = config.width, config.in_channels
        attend = {s % config.num_stages for s in config.attention_stages}
        self.states = nn.Parameter(torch.randn(config.num_states, width) * width**-0.5)
        # Stage s >= 1 sees the previous stage's features, the raw input and its logit.
        self.stages = nn.ModuleList(
            Stage(
                c_in if s == 0 else width + c_in + 1,
                width,
                config.blocks_per_stage,
                config.heads,
                config.qk_rmsnorm,
                s in attend,
                config.rotary,
                config.attention_keys,
                config.graph_layer,
                self.task.coords,
            )
            for s in range(config.num_stages)
        )

    @overload
    def num_kept(self, n: int) -> int: ...

    @overload
    def num_kept(self, n: torch.Tensor) -> torch.Tensor: ...

    def num_kept(self, n: int | torch.Tensor) -> int | torch.Tensor:
        """Matches kept out of n when pruning: ceil(ratio · n), at least eight (or all n).

        n: an int, or per-pair counts (B,) long -> (B,) long on their device (no host sync).
        """
        if not isinstance(n, torch.Tensor):  # in Python: no tensor, no host sync
            return min(max(math.ceil(n * self.prune_ratio), MIN_MATCHES), n)
        kept = torch.ceil(n.double() * self.prune_ratio).long().clamp_min(MIN_MATCHES)
        return torch.minimum(kept, n)

    def _stage_counts(self, mask: torch.Tensor) -> list[torch.Tensor]:
        """Real matches per pair at each stage, (B,) long each: mask (B, N) -> S tensors.

        Stage 0 sees the mask's matches; stage s >= 1 keeps :meth:`num_kept` of stage s - 1's.
        """
        counts = [mask.sum(-1)]
        for _ in self.stages[1:]:
            counts.append(self.num_kept(counts[-1]))
        return counts

    def _check_shapes(self, x: torch.Tensor, mask: torch.Tensor | None) -> None:
        """ValueError for x that is not (B, N >= 8, C) or a mask that is not (B, N) bool."""
        if x.ndim != 3 or x.shape[-1] != self.in_channels:
            raise ValueError(f"x: expected shape (B, N, {self.in_channels}), got {tuple(x.shape)}")
        b, n, _ = x.shape
        if n < MIN_MATCHES:
            raise ValueError(f"x: expected at least {MIN_MATCHES} matches, got {n}")
        if mask is not None and (mask.shape != (b, n) or mask.dtype != torch.bool):
            raise ValueError(
                f"mask: expected a bool tensor of shape {(b, n)}, got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )

    def check_inputs(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Validate the matches x (B, N, C) and the optional mask (B, N) bool of real matches.

        ValueError for a wrong shape or dtype, a non-finite value or a pair with fewer than
        eight real matches.  Returns the mask to run with: None where every match is real (the
        unmasked kernels compute the same, faster).  One host synchronisation on x's device:
        run it on the host copy before moving a batch to an accelerator (as
        :class:`~corrnet.models.inference.InferenceModel` does).
        """
        self._check_shapes(x, mask)
        finite = torch.isfinite(x).flatten(1).all(-1)
        probe = [finite.all()]
        if mask is not None:
            probe += [mask.all(), (mask.sum(-1) < MIN_MATCHES).any()]
        all_finite, *facts = torch.stack([p.long() for p in probe]).tolist()
        if not all_finite:
            raise ValueError(
                f"x: NaN or infinite values in pair(s) {torch.nonzero(~finite).flatten().tolist()} "
                f"of the batch; expected finite coordinates and side information"
            )
        if mask is None:
            return None
        all_real, too_few = facts
        if too_few:
            raise ValueError(
                f"mask: expected at least {MIN_MATCHES} real matches per pair, "
                f"got {mask.sum(-1).tolist()}"
            )
        return None if all_real else mask

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, validate: bool = True
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Score every match and estimate the essential matrix.

        Args:
            x: (B, N, C) matches, N >= 8.
            mask: optional (B, N) bool, True on real matches (at least eight per pair).
                Padded matches do not change the outputs on the real ones: they are left out
                of the instance norms, the graph, every attention's keys, the pruning (each
                pair keeps :meth:`num_kept` of its own real matches) and E.  In eval mode the
                real matches' outputs equal those of the unpadded pair up to float rounding;
                in training mode BatchNorm's batch statistics still include the padded rows.
            validate: :meth:`check_inputs` (one host synchronisation).  False checks the
                shapes only and runs without any synchronisation or data-dependent shape (for
                CUDA graphs and ``torch.compile``); the caller vouches for finite values and
                eight real matches per pair, and a mask that is all True runs the masked
                kernels (the same outputs up to float rounding).
        Returns:
            ``logits`` (B, N): inlier logits of every input match (a pruned match keeps the
            logits of the last stage that saw it; meaningless on padded matches);
            ``weights`` (B, N): relu(tanh(logits)) on the last stage's real matches, 0
            elsewhere; ``E`` (B, 3, 3): weighted eight-point estimate from those weights
            (float32), or the estimate of another task (:meth:`corrnet.tasks.Task.estimate`;
            rigid: ``R`` (B, 3, 3) and ``t`` (B, 3), the weighted Kabsch transform in metres,
            float64).  Per stage s, lists of (B, N_s)
            over that stage's matches, N_s = :meth:`num_kept` of N_(s-1) (a pair with padding
            fills its surplus slots with matches it did not keep): ``stage_logits``,
            ``graph_logits`` (the w that builds the stage's graph Laplacian,
            a = relu(tanh(w))), ``stage_indices`` (long indices into the N input matches) and
            ``stage_masks`` (bool, True on the real matches the stage kept).
        """
        if validate:
            mask = self.check_inputs(x, mask)
        else:
            self._check_shapes(x, mask)
        b, n, _ = x.shape
        x = x.to(self.states.dtype)  # e.g. float64 matches into a float32 network
        counts = None if mask is None else self._stage_counts(mask)
        d = self.task.coords
        points, x = x[..., :d], self.task.normalise(x, mask)
        raw = rearrange(x, "b n c -> b c n 1")
        coords = x[..., :d]
        index = torch.arange(n, device=x.device).expand(b, n)
        states = repeat(self.states, "m w -> b m w", b=b)
        feats, smask = raw, mask
        out: dict[str, list[torch.Tensor]] = {
            "stage_logits": [],
            "graph_logits": [],
            "stage_indices": [],
            "stage_masks": [],
        }
        for s, stage in enumerate(self.stages):
            if s > 0:
                # A fixed count per batch (the most any pair keeps): no data-dependent shape.
                k, score = self.num_kept(logits.shape[-1]), logits.detach()  # noqa: F821
                if smask is not None:
                    score = score.masked_fill(~smask, -torch.inf)
                # Stable sort: deterministic, ties broken by the current order.
                order = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :k]
                if smask is not None:
                    smask = torch.arange(k, device=x.device) < counts[s].unsqueeze(-1)
                index = index.gather(1, order)
                feats = torch.cat(
                    [
                        gather_matches(feats, order),
                        gather_matches(raw, index),
                        rearrange(logits.gather(1, order), "b k -> b 1 k 1").to(feats.dtype),  # noqa: F821
                    ],
                    1,
                )
            feats, logits, w, states = stage(
                feats, coords.gather(1, repeat(index, "b k -> b k d", d=d)), states, smask
            )
            out["stage_logits"].append(logits)
            out["graph_logits"].append(w)
            out["stage_indices"].append(index)
            out["stage_masks"].append(
                torch.ones_like(index, dtype=torch.bool) if smask is None else smask
            )

        full = out["stage_logits"][0]
        for idx, lg, m in zip(
            *(out[k][1:] for k in ("stage_indices", "stage_logits", "stage_masks"))
        ):
            full = full.scatter(1, idx, torch.where(m, lg.to(full.dtype), full.gather(1, idx)))
        weights = graph_weights(logits.float())
        if smask is not None:
            weights = weights * smask
        estimate = self.task.estimate(points.gather(1, repeat(index, "b k -> b k d", d=d)), weights)
        return {
            "logits": full,
            **out,
            **estimate,
            "weights": torch.zeros_like(full, dtype=torch.float32).scatter(1, index, weights),
        }
