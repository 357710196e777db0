"""One place that turns a data spec (``synthetic`` or an HDF5 path) into a task's dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from corrnet.errors import UserError
from corrnet.tasks import Task, default_task, task_of_file

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
    task: Task | None = None,
) -> Dataset:
    """``"synthetic"`` -> the task's generator's split (:meth:`Task.synthetic`); anything else
    is a path to a prepared file of the task's pairs (:meth:`Task.open_file`: an OANet-format
    HDF5 file for two-view, a file of ``data/prepare3d.py`` for rigid).  ``task`` None: the
    default :class:`~corrnet.models.CorrNetConfig`'s (two-view).

    ``side_info``: the network's input channels (:func:`corrnet.channels.network_input`); a file
    without a group they need is refused naming the file and the keys.
    Environment variables in the path are expanded (``$CORRNET_DATA/yfcc-sift-2000-train.hdf5``).
    """
    task = task or default_task()
    path = check_data_spec(spec, task)
    if path is None:
        return task.synthetic(
            synthetic_pairs, synthetic_seed(seed, split), num_matches, side_info, synthetic_mode
        )
    return task.open_file(path, side_info)


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
    spec: str, task: Task | None = None, side_info: bool | Sequence[str] = False
) -> Path | None:
    """None for ``"synthetic"``; otherwise the expanded path of a prepared file of ``task``'s
    pairs (None: the default task's, an OANet-format HDF5 file) that has the groups the input
    channels ``side_info`` need.

    Raises FileNotFoundError (no such file, unset variable), OSError (not HDF5 or damaged)
    or ValueError (groups missing, also those of the channels, a file of another task's
    pairs, such as a 3-D file for a two-view network), each naming the file.
    """
    task = task or default_task()
    path = data_path(spec)
    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such OANet-format HDF5 file")
    holds = task_of_file(path)
    if holds.name != task.name:
        raise UserError(
            f"{path}: a {holds.pairs} file, but the network's geometry is {task.name!r} "
            f"(model.net.geometry: {holds.name} reads it)"
        )
    task.open_file(path, side_info)  # opens it and checks its groups: fails now, not in a worker
    return path
