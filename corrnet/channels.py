"""Named input channels of the network: what it sees of each match after the coordinates.

A network's ``side_info`` (:class:`corrnet.models.CorrNetConfig`) is a list of channel names
(``true`` is ``["ratio", "mutual"]``, ``false`` is none); :func:`network_input` builds its input
from the coordinates and the per-match arrays of a sample, a batch or a file.  Datasets,
training, evaluation and the benchmarks all call it, so the data follows the model's list.
See docs/channels.md for the keys, units and scalings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from corrnet.errors import UserError

CHANNELS: dict[str, tuple[str, int]] = {
    "ratio": ("ratios", 1),
    "mutual": ("mutuals", 1),
    "log_scale_ratio": ("sizes", 1),
    "orientation": ("angles", 2),
    "descriptor_distance": ("dists", 1),
}
"""Named input channels after the coordinates: name -> (the per-match key it is computed from,
its number of columns).  ``ratio``: Lowe's ratio d1/d2; ``mutual``: 0/1 mutual-NN flag;
``log_scale_ratio``: log(size2 / size1); ``orientation``: sin and cos of angle2 - angle1;
``descriptor_distance``: the nearest descriptor distance / :data:`DESCRIPTOR_SCALE`
(docs/channels.md)."""
LEGACY_SIDE_INFO = ("ratio", "mutual")
"""The channels of ``side_info: true`` (the shipped weights); ``false`` is none."""
DESCRIPTOR_SCALE = 512.0
"""Divisor of the ``descriptor_distance`` channel: OpenCV's SIFT descriptors have an L2 norm of
about 512, so distances (0 to ~724) become ~0-1.4 (nearest neighbours: mostly 0.2-0.8)."""


def side_info_channels(
    side_info: bool | Sequence[str], where: str = "side_info"
) -> tuple[str, ...]:
    """The channel names of a ``side_info`` setting: True -> :data:`LEGACY_SIDE_INFO`, False ->
    (), a list of names of :data:`CHANNELS` -> itself; ValueError naming ``where`` for an
    unknown or repeated name."""
    if isinstance(side_info, bool):
        return LEGACY_SIDE_INFO if side_info else ()
    if isinstance(side_info, str):
        raise UserError(
            f"{where}: expected true, false or a list of channel names, got {side_info!r}"
        )
    names = tuple(side_info)
    unknown = [c for c in names if c not in CHANNELS]
    if unknown:
        raise UserError(f"{where}: unknown channel(s) {unknown}; expected some of {list(CHANNELS)}")
    if len(set(names)) < len(names):
        raise UserError(f"{where}: expected each channel once, got {list(names)}")
    return names


def channel_keys(side_info: bool | Sequence[str]) -> tuple[str, ...]:
    """The per-match keys (file groups, sample keys) the channels of ``side_info`` need."""
    return tuple(dict.fromkeys(CHANNELS[c][0] for c in side_info_channels(side_info)))


def channel_count(side_info: bool | Sequence[str]) -> int:
    """Input columns the channels of ``side_info`` add after the coordinates."""
    return sum(CHANNELS[c][1] for c in side_info_channels(side_info))


def channel_columns(side_info: bool | Sequence[str]) -> tuple[str, ...]:
    """One name per input column the channels of ``side_info`` add after the coordinates, e.g.
    ``("ratio", "orientation.sin", "orientation.cos")``."""
    return tuple(
        f"{name}.{part}" if CHANNELS[name][1] > 1 else name
        for name in side_info_channels(side_info)
        for part in (("sin", "cos") if CHANNELS[name][1] > 1 else ("",))
    )


def network_input(
    xs: torch.Tensor, per_match: Mapping[str, torch.Tensor], side_info: bool | Sequence[str]
) -> torch.Tensor:
    """The network's input: coordinates ``xs`` (..., N, D) followed by the channels of
    ``side_info`` (:func:`side_info_channels`), in its order, computed from ``per_match``
    (keys of :data:`CHANNELS`: ``ratios``, ``mutuals`` (..., N); ``sizes``, ``angles``,
    ``dists`` (..., N, 2)) -> (..., N, D + :func:`channel_count`) in the dtype of ``xs``.

    ``side_info=True`` gives [xs, ratio, mutual] exactly as before the channels had names.
    Raises KeyError naming the channel and the key when ``per_match`` lacks it.
    """
    columns = [xs]
    for name in side_info_channels(side_info):
        key = CHANNELS[name][0]
        if key not in per_match:
            raise KeyError(f"channel {name!r} needs the per-match key {key!r}")
        a = torch.as_tensor(per_match[key]).to(xs.dtype)
        if name in ("ratio", "mutual"):
            columns.append(a[..., None])
        elif name == "log_scale_ratio":
            columns.append(torch.log(a[..., 1:2] / a[..., 0:1]))
        elif name == "orientation":
            turn = torch.deg2rad(a[..., 1:2] - a[..., 0:1])
            columns += [torch.sin(turn), torch.cos(turn)]
        else:  # descriptor_distance
            columns.append(a[..., 0:1] / DESCRIPTOR_SCALE)
    return torch.cat(columns, -1) if len(columns) > 1 else xs


SWAP_NEGATED = ("log_scale_ratio", "orientation.sin")
"""Columns whose sign flips when the two images trade places (:func:`swap_views`)."""


def swap_views(features: torch.Tensor, side_info: bool | Sequence[str]) -> torch.Tensor:
    """The input of the same matches with images 1 and 2 in the other order: features
    (..., N, 4 + :func:`channel_count`) of :func:`network_input` -> the same shape, with
    (x2, y2, x1, y1) and the columns of :data:`SWAP_NEGATED` negated (log(size1 / size2) and
    sin(angle1 - angle2)).  ``ratio``, ``mutual`` and ``descriptor_distance`` stay as given: they
    describe the nearest-neighbour search from image 1, the only one there is."""
    columns = channel_columns(side_info)
    if features.shape[-1] != 4 + len(columns):
        raise ValueError(
            f"features: expected 4 + {len(columns)} columns for channels {list(columns)}, "
            f"got {features.shape[-1]}"
        )
    sign = torch.ones(features.shape[-1], dtype=features.dtype, device=features.device)
    sign[[4 + i for i, c in enumerate(columns) if c in SWAP_NEGATED]] = -1
    order = [2, 3, 0, 1, *range(4, features.shape[-1])]
    return features[..., order] * sign
