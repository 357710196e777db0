"""LightningDataModule over the synthetic generator or OANet-format HDF5 files."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from torch.utils.data import DataLoader

from corrnet.datasets import PairCollator
from corrnet.datasets.factory import check_data_spec, open_dataset
from corrnet.errors import UserError
from corrnet.models import CorrNetConfig
from corrnet.tasks import get_task

from .sampling import Draws, Mixture, ResumableSampler, check_weights


class CorrNetDataModule(L.LightningDataModule):
    """Train / val / test splits of matched image pairs.

    Args:
        train, val, test: ``"synthetic"`` or a path to an OANet-format HDF5 file
            (``$VARS`` expanded, e.g. ``$CORRNET_DATA/yfcc-sift-2000-train.hdf5``); ``train``
            may be a list of them, mixed at ``train_weights``.
        train_weights: with several training sets, the share of training pairs drawn from
            each (normalised; default: in proportion to their sizes), see
            :class:`~corrnet.training.sampling.Mixture`.
        batch_size: pairs per batch.
        num_matches: matches per pair in a training batch (pairs are subsampled without
            replacement to a common N, OANet's way; ``None`` takes the batch's smallest N).
        batching: ``"subsample"`` (default) or ``"pad"`` (pad to the largest N with masked
            copies of real matches).
        side_info: the named input channels after the coordinates
            (:func:`corrnet.channels.network_input`; true: ratio and mutual-NN, C = 6); in
            ``train.py`` it follows ``model.net.side_info`` and cannot be set here.
        geometry: the name of the task (:data:`corrnet.tasks.TASKS`), which opens the data:
            ``two_view`` or ``rigid`` (3-D pairs: ``synthetic`` is the 3-D generator and paths
            are files of ``data/prepare3d.py``); in ``train.py`` it follows
            ``model.net.geometry``.
        synthetic_mode: ``outdoor``, ``indoor`` or ``mixed`` scenes for synthetic splits.
        synthetic_train_pairs, synthetic_val_pairs, synthetic_test_pairs: split sizes.
        seed: seeds the synthetic splits and the subsampling.
    """

    def __init__(
        self,
        train: str | list[str] = "synthetic",
        val: str = "synthetic",
        test: str = "synthetic",
        train_weights: list[float] | None = None,
        batch_size: int = 16,
        num_matches: int | None = 2000,
        batching: str = "subsample",
        num_workers: int = 2,
        side_info: bool | Sequence[str] = False,
        geometry: str = CorrNetConfig.geometry,
        synthetic_mode: str = "mixed",
        synthetic_train_pairs: int = 20000,
        synthetic_val_pairs: int = 200,
        synthetic_test_pairs: int = 500,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batching not in ("subsample", "pad"):
            raise UserError(f"batching: expected 'subsample' or 'pad', got {batching!r}")
        self.save_hyperparameters()
        self.task = get_task(geometry, "data.geometry")
        self.train_specs = [train] if isinstance(train, str) else list(train)
        if not self.train_specs:
            raise UserError(
                "data.train: expected 'synthetic', an HDF5 path or a list of them, got []"
            )
        if train_weights is not None:
            check_weights(train_weights, len(self.train_specs))
        for spec in (*self.train_specs, val, test):  # fail before training starts, not an hour in
            check_data_spec(spec, self.task, side_info)

    def _dataset(self, split: str, spec: str | None = None):
        h = self.hparams
        return open_dataset(
            spec or getattr(h, split),
            split,
            side_info=h.side_info,
            seed=h.seed,
            synthetic_pairs=getattr(h, f"synthetic_{split}_pairs"),
            synthetic_mode=h.synthetic_mode,
            num_matches=h.num_matches or 2000,
            task=self.task,
        )

    def _train_dataset(self):
        """The training set, or the :class:`Mixture` of several."""
        sets = [self._dataset("train", spec) for spec in self.train_specs]
        if len(sets) == 1:
            return sets[0]
        weights = self.hparams.train_weights or [float(len(d)) for d in sets]
        return Mixture(sets, weights, seed=self.hparams.seed)

    def _eval_loader(self, split: str) -> DataLoader:
        """Evaluation splits keep every match of every pair: one pair per batch, in order."""
        h = self.hparams
        return DataLoader(
            self._dataset(split),
            batch_size=1,
            num_workers=h.num_workers,
            collate_fn=PairCollator(mode=h.batching, seed=h.seed),
            persistent_workers=h.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled by (seed, epoch), shared out between DDP processes; a resumed run skips the
        batches its checkpoint had seen."""
        h = self.hparams
        dataset = Draws(self._train_dataset())
        trainer = self.trainer
        rank, replicas = (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)
        sampler = ResumableSampler(len(dataset), seed=h.seed, rank=rank, num_replicas=replicas)
        if trainer is not None:  # a restored checkpoint's epoch and the batches done in it
            loop = trainer.fit_loop
            sampler.epoch = loop.epoch_progress.current.processed
            done = loop.epoch_loop.batch_progress.current.processed
            sampler.skip = done * h.batch_size * replicas
        return DataLoader(
            dataset,
            batch_size=h.batch_size,
            sampler=sampler,
            num_workers=h.num_workers,
            persistent_workers=h.num_workers > 0,
            collate_fn=PairCollator(mode=h.batching, num_matches=h.num_matches, seed=h.seed),
            drop_last=True,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
