"""One place that turns a data spec (``synthetic`` or an HDF5 path) into a dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from corrnet.errors import UserError

from .oanet_hdf5 import OANetPairs
from .pairs3d import Pairs3D, is_pairs3d
from .synthetic import SyntheticPairs
from .synthetic3d import Synthetic3DPairs

SPLITS = ("train", "val", "test")


def synthetic_seed(seed: int, split: str) -> int:
    """Seed of a synthetic split: the three splits never share a pair."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    return 1_000_003 * SPLITS.index(split) + seed


def open_dataset(
    spec: str,
    split: str,
    *,
    side_info: bool | Sequence[str] = False,
    seed: int = 0,
    synthetic_pairs: int = 1000,
    synthetic_mode: str = "mixed",
    num_matches: int = 2000,
    geometry: str = "two_view",
) -> Dataset:
    """``"synthetic"`` -> the generator's split; anything else is an OANet-format HDF5 path.

    ``side_info``: the network's input channels (:func:`corrnet.channels.network_input`); a file
    without a group they need is refused naming the file and the keys.

    With ``geometry="rigid"`` the same for 3-D pairs: the synthetic 3-D generator
    (:class:`Synthetic3DPairs`) or a file of ``data/prepare3d.py`` (:class:`Pairs3D`).
    Environment variables in the path are expanded (``$CORRNET_DATA/yfcc-sift-2000-train.hdf5``).
    """
    path = check_data_spec(spec, geometry)
    rigid = geometry == "rigid"
    if path is None:
        kind = Synthetic3DPairs if rigid else SyntheticPairs
        extra = {} if rigid else {"mode": synthetic_mode}
        return kind(
            length=synthetic_pairs,
            seed=synthetic_seed(seed, split),
            num_matches=num_matches,
            side_info=side_info,
            **extra,
        )
    return Pairs3D(path, side_info=side_info) if rigid else OANetPairs(path, side_info=side_info)


def data_path(spec: str) -> Path | None:
    """None for ``"synthetic"``; otherwise the path with ``~`` and environment variables
    expanded.  Raises FileNotFoundError naming the path where a variable is not set."""
    if spec == "synthetic":
        return None
    path = Path(os.path.expandvars(os.path.expanduser(spec)))
    if "$" in str(path):
        raise FileNotFoundError(
            f"{spec}: an environment variable in this path is not set "
            f"(for example: export CORRNET_DATA=/path/to/oanet/dumps)"
        )
    return path


def check_data_spec(
    spec: str, geometry: str = "two_view", side_info: bool | Sequence[str] = False
) -> Path | None:
    """None for ``"synthetic"``; otherwise the expanded path of an OANet-format HDF5 file
    (``geometry="rigid"``: of a 3-D pairs file) that has the groups the input channels
    ``side_info`` need.

    Raises FileNotFoundError (no such file, unset variable), OSError (not HDF5 or damaged)
    or ValueError (groups missing, also those of the channels, a 3-D file for a two-view
    network or the reverse), each naming the file.
    """
    path = data_path(spec)
    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such OANet-format HDF5 file")
    three_d = is_pairs3d(path)
    if three_d != (geometry == "rigid"):
        raise UserError(
            f"{path}: a {'3-D' if three_d else 'two-view'} pairs file, but the "
            f"network's geometry is {geometry!r} (model.net.geometry: "
            f"{'rigid' if three_d else 'two_view'} reads it)"
        )
    # opens it and checks its groups: fails now, not in a DataLoader worker
    (Pairs3D if geometry == "rigid" else OANetPairs)(path, side_info=side_info)
    return path
