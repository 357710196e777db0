"""A training order that a resumed run can pick up exactly where it stopped, over one
dataset or a weighted mixture of several."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from corrnet.errors import UserError


def check_weights(weights: Sequence[float], count: int) -> None:
    """``data.train_weights``: one weight >= 0 per training set, with a positive sum."""
    if len(weights) != count:
        raise UserError(
            f"data.train_weights: expected one weight per training set ({count}), "
            f"got {len(weights)}"
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(
            f"data.train_weights: expected weights >= 0 with a positive sum, got {list(weights)}"
        )


class Mixture(Dataset):
    """Several datasets drawn from at fixed rates: item i comes from dataset k with probability
    ``weights[k]`` (normalised), and is a uniformly drawn pair of it.

    Both choices are seeded by (seed, i), so item i is the same in every run and after a
    resume.  Length: the sum of the datasets' lengths (one epoch).  String entries (image
    paths, which only real pairs have) are dropped so that pairs of every source batch together.
    """

    def __init__(
        self, datasets: Sequence[Dataset], weights: Sequence[float], seed: int = 0
    ) -> None:
        check_weights(weights, len(datasets))
        empty = [k for k, d in enumerate(datasets) if len(d) == 0 and weights[k] > 0]
        if empty:
            raise UserError(f"data.train: training set(s) number {empty} have no pairs")
        self.datasets, self.seed = list(datasets), seed
        self.p = np.asarray(weights, dtype=np.float64) / sum(weights)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def source(self, index: int) -> tuple[int, int]:
        """(dataset, pair) of item ``index``."""
        rng = np.random.default_rng([self.seed, index])
        k = int(rng.choice(len(self.datasets), p=self.p))
        return k, int(rng.integers(len(self.datasets[k])))

    def __getitem__(self, index: int) -> dict:
        k, i = self.source(index)
        return {key: v for key, v in self.datasets[k][i].items() if not isinstance(v, str)}


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


class ResumableSampler(DistributedSampler):
    """Shuffled draws whose order is fixed by (seed, epoch), the first epoch starting after
    ``skip`` of them, shared out between ``num_replicas`` training processes.

    Each iteration is one epoch, numbered from ``epoch`` on: the sampler counts its epochs
    itself (:meth:`set_epoch` is ignored), because Lightning's epoch counter is one ahead when
    it resumes from a checkpoint taken on an epoch's last batch.  The data module sets
    ``epoch`` and ``skip`` from the restored checkpoint (its epoch, and the samples all
    processes together had consumed in it).  Process ``rank`` takes draws rank,
    rank + num_replicas, ... of the epoch's order (as many as every process gets; the remainder
    is dropped), so step k's global batch is the same draws whatever the number of processes.
    The length is always the whole epoch's share: Lightning counts a resumed epoch's batches
    from its start, so an epoch resumed after its last batch ends at once and the next runs in
    full.  A ``DistributedSampler`` (without its process-group look-up), so that Lightning's
    DDP uses it as it is rather than wrapping and reshuffling it.
    """

    def __init__(
        self,
        length: int,
        seed: int = 0,
        rank: int = 0,
        num_replicas: int = 1,
        epoch: int = 0,
        skip: int = 0,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank: expected 0 <= rank < num_replicas={num_replicas}, got {rank}")
        self.length, self.seed, self.rank, self.num_replicas = length, seed, rank, num_replicas
        self.epoch, self.skip = epoch, skip

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the sampler counts its epochs itself (see the class docstring)."""

    def __len__(self) -> int:
        return self.length // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
        draws = order[min(self.skip, self.length) :]
        mine = draws[self.rank :: self.num_replicas][: len(draws) // self.num_replicas]
        mine = mine + self.epoch * self.length
        self.epoch, self.skip = self.epoch + 1, 0
        return iter(mine.tolist())
