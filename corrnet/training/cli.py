"""``python train.py --config configs/synthetic.yaml [--trainer.max_steps 100] [--ckpt_path last]``."""

from __future__ import annotations

import argparse
import os
import sys

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from corrnet.checkpoint import read_checkpoint

from .datamodule import CorrNetDataModule
from .module import CorrNetModule


RESUME_KEYWORDS = ("last", "best", "hpc", "registry")
"""``--ckpt_path`` values (``registry:...`` too) that Lightning resolves itself."""


class BestAndLastCheckpoint(ModelCheckpoint):
    """Keeps the best checkpoints by ``monitor`` and refreshes ``last.ckpt`` at every validation.

    Lightning 2.6 writes ``last.ckpt`` only when a top-k checkpoint is written in the same
    step, so a run whose score stops improving would resume from an old step.
    """

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class CorrNetCLI(LightningCLI):
    """LightningCLI with the best-by-validation-mAP20 checkpoint and ``--ckpt_path`` to resume."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/mAP20",   # OANet's mAP20 without RANSAC, validation split
            "checkpoint.mode": "max",
            "checkpoint.save_last": True,
            "checkpoint.filename": "best-{step}",
            "checkpoint.auto_insert_metric_name": False,
        })
        # The data's side channels follow from the network's input: set only in model.net.
        parser.link_arguments("model.net.side_info", "data.side_info", apply_on="parse")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume from this checkpoint; 'last' takes checkpoint.dirpath/last.ckpt")

    def before_instantiate_classes(self) -> None:
        trainer = self.config.trainer
        if trainer.precision is None and torch.cuda.is_available():
            trainer.precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def main(argv: list[str] | None = None) -> int:
    """Train; bad input (an unknown or ill-typed config key, missing data, bad values) ends
    with one clear line, exit 2."""
    try:
        cli = CorrNetCLI(CorrNetModule, CorrNetDataModule, run=False, args=argv,
                         seed_everything_default=0, save_config_kwargs={"overwrite": True},
                         parser_kwargs={"exit_on_error": False})
        ckpt_path = cli.config.ckpt_path
        if ckpt_path is not None and ckpt_path.split(":")[0] not in RESUME_KEYWORDS:
            read_checkpoint(ckpt_path, mmap=True)   # a missing or corrupt file: one line, not deep in fit
        cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=ckpt_path, weights_only=True)
    except (FileNotFoundError, ValueError, argparse.ArgumentError) as err:
        if os.environ.get("CORRNET_DEBUG"):
            raise
        print(f"train.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0
