"""One place that turns a data spec (``synthetic`` or an HDF5 path) into a dataset."""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from .oanet_hdf5 import OANetPairs
from .synthetic import SyntheticPairs

SPLITS = ("train", "val", "test")


def synthetic_seed(seed: int, split: str) -> int:
    """Seed of a synthetic split: the three splits never share a pair."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    return 1_000_003 * SPLITS.index(split) + seed


def open_dataset(spec: str, split: str, *, side_info: bool = False, seed: int = 0,
                 synthetic_pairs: int = 1000, synthetic_mode: str = "mixed",
                 num_matches: int = 2000) -> Dataset:
    """``"synthetic"`` -> the generator's split; anything else is an OANet-format HDF5 path.

    Environment variables in the path are expanded (``$CORRNET_DATA/yfcc-sift-2000-train.hdf5``).
    """
    path = check_data_spec(spec)
    if path is None:
        return SyntheticPairs(length=synthetic_pairs, seed=synthetic_seed(seed, split),
                              mode=synthetic_mode, num_matches=num_matches, side_info=side_info)
    return OANetPairs(path, side_info=side_info)


def check_data_spec(spec: str) -> Path | None:
    """None for ``"synthetic"``; otherwise the expanded path of an OANet-format HDF5 file.

    Raises FileNotFoundError (no such file, unset variable), OSError (not HDF5 or damaged)
    or BadPairError (groups missing), each naming the file.
    """
    if spec == "synthetic":
        return None
    path = Path(os.path.expandvars(os.path.expanduser(spec)))
    if "$" in str(path):
        raise FileNotFoundError(f"{spec}: an environment variable in this path is not set "
                                f"(for example: export CORRNET_DATA=/path/to/oanet/dumps)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such OANet-format HDF5 file")
    OANetPairs(path)   # opens it and checks its groups: fails now, not in a DataLoader worker
    return path
