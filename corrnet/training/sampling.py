"""A training order that a resumed run can pick up exactly where it stopped."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class Draws(Dataset):
    """Wraps a dataset so that item ``d`` is pair ``d % len`` tagged with ``"draw" = d``.

    The draw number (epoch · len + index) seeds the per-pair subsampling in
    :class:`~corrnet.datasets.PairCollator`, so a batch does not depend on what came before it.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, draw: int) -> dict:
        sample = dict(self.dataset[draw % len(self.dataset)])
        sample["draw"] = torch.tensor(draw, dtype=torch.int64)
        return sample


class ResumableSampler(Sampler[int]):
    """Shuffled draws whose order is fixed by (seed, epoch), starting after ``skip`` of them.

    Lightning calls :meth:`set_epoch` before each epoch; the data module sets ``skip`` to the
    number of samples the restored checkpoint had already consumed in its epoch.
    """

    def __init__(self, length: int, seed: int = 0) -> None:
        self.length, self.seed = length, seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length - self.skip

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
        start, self.skip = self.skip, 0
        return iter((order[start:] + self.epoch * self.length).tolist())
