"""Batching pairs with different numbers of matches."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .sample import PER_MATCH_KEYS

MODES = ("subsample", "pad")


def collate_pairs(
    batch: Sequence[dict],
    mode: str = "subsample",
    num_matches: int | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> dict[str, torch.Tensor | list[str]]:
    """Stack sample dictionaries into a batch.

    ``"subsample"`` (OANet's way): every pair keeps a common number n of matches drawn
    without replacement, n = ``num_matches`` or else the smallest N of the batch; a pair with
    fewer than ``num_matches`` keeps all its matches and is padded.  ``"pad"``: every pair is
    padded to the largest N (or ``num_matches`` if larger).  Padding repeats matches of the
    same pair drawn at random (with every per-match key), so the network only ever sees real
    geometry (zeros would be a fake match at the principal points, consistent with any E
    whose last entry is 0).  Both modes add ``"mask"`` (B, n) bool, True on the original
    matches, which the loss and validation use to ignore the copies.  Per-match keys become
    (B, n, ...), the others (B, ...); string keys (image paths) become lists.  ``generator`` is one
    generator
    for the whole batch or one per pair.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if not batch:
        raise ValueError("batch: expected at least one sample, got none")
    sizes = [len(s["xs"]) for s in batch]
    if mode == "subsample":
        n = num_matches if num_matches is not None else min(sizes)
    else:
        n = max(sizes + ([num_matches] if num_matches is not None else []))
    if n < 1:
        raise ValueError(f"num_matches: expected a positive number, got {n}")
    keys = [k for k in PER_MATCH_KEYS if k in batch[0]]
    out: dict[str, list] = {k: [] for k in keys + ["mask"]}
    generators = generator if isinstance(generator, Sequence) else [generator] * len(batch)
    for s, size, gen in zip(batch, sizes, generators):
        keep = min(size, n)
        idx = (
            torch.randperm(size, generator=gen)[:keep]
            if mode == "subsample" and size > n
            else torch.arange(keep)
        )
        idx = torch.cat([idx, torch.randint(size, (n - keep,), generator=gen)])
        for k in keys:
            out[k].append(s[k][idx])
        out["mask"].append(torch.arange(n) < keep)
    result: dict[str, torch.Tensor | list[str]] = {k: torch.stack(v) for k, v in out.items()}
    for k, v in batch[0].items():
        if k in keys:
            continue
        result[k] = (
            [s[k] for s in batch] if isinstance(v, str) else torch.stack([s[k] for s in batch])
        )
    return result


class PairCollator:
    """``collate_pairs`` as a picklable DataLoader ``collate_fn`` with its own seed.

    Each process (main or DataLoader worker) gets its own generator seeded from ``seed`` and
    the worker id, so subsampling is reproducible and differs between workers.  Samples that
    carry a ``"draw"`` number (the training sampler's) are subsampled with a generator seeded
    by (seed, draw) instead, so a batch is the same whatever came before it.
    """

    def __init__(
        self, mode: str = "subsample", num_matches: int | None = None, seed: int = 0
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        self.mode, self.num_matches, self.seed = mode, num_matches, seed
        self._generator: torch.Generator | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_generator"], state["_pid"] = None, None
        return state

    def __call__(self, batch: Sequence[dict]) -> dict[str, torch.Tensor | list[str]]:
        if self._generator is None or self._pid != os.getpid():
            info = torch.utils.data.get_worker_info()
            worker = 0 if info is None else info.id + 1
            self._generator = torch.Generator().manual_seed(self.seed * 1009 + worker)
            self._pid = os.getpid()
        if all("draw" in s for s in batch):
            generators = [
                torch.Generator().manual_seed(self.seed * 1_000_003 + int(s["draw"])) for s in batch
            ]
            return collate_pairs(batch, self.mode, self.num_matches, generators)
        return collate_pairs(batch, self.mode, self.num_matches, self._generator)
