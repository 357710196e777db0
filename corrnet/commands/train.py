"""Train CorrNet with Lightning.

    corrnet train --config synthetic [--trainer.max_steps 100] [--ckpt_path last]
(``python train.py`` is the same command.)  ``--config NAME`` without a suffix is the shipped
``configs/NAME.yaml`` (:func:`corrnet.commands.config_path`); a path stays a path.  Bad input
(data, config values, ``--ckpt_path``) ends with one ``PROG: error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from jsonargparse import set_loader
from jsonargparse._loaders_dumpers import yaml_load
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from corrnet.atomic import atomic_path
from corrnet.checkpoint import check_resumable
from corrnet.commands import config_path
from corrnet.datasets.factory import check_data_spec
from corrnet.datasets.oanet_hdf5 import INTRINSICS_KEYS, OANetPairs
from corrnet.errors import USER_ERRORS, UserError, run_command
from corrnet.training.datamodule import CorrNetDataModule
from corrnet.training.module import CorrNetModule

RESUME_KEYWORDS = ("best", "hpc", "registry")
"""``--ckpt_path`` values (``registry:...`` too) that Lightning resolves itself; ``last`` is
resolved here, so that a missing ``last.ckpt`` is an error rather than a fresh start."""

NOT_RESUMABLE = "You're resuming from a checkpoint that ended before the epoch ended"
"""Start of Lightning's warning that a mid-epoch resume may repeat or skip batches.  Silenced:
CorrNetDataModule's sampler skips exactly the batches the checkpoint had seen."""

ARGS_AND_ARGV = "LightningCLI's args parameter is intended"
"""Start of Lightning's warning when ``args`` is given while ``sys.argv`` has arguments.
Silenced: :func:`main` always passes the command line itself (with the shipped config names
resolved), so Lightning never reads ``sys.argv``."""


MAX_YAML_NODES = 100_000
"""Most nodes a YAML config or value may expand to through its aliases (a few hundred in the
project's configs; a "billion laughs" document expands to 10⁹ from a few hundred bytes)."""


def bounded_yaml_load(text: str):
    """jsonargparse's YAML loader, after counting the nodes the document expands to through
    its anchors and aliases (from the parser's events, before anything is built): ValueError
    beyond :data:`MAX_YAML_NODES`."""
    sizes: dict[str, int] = {}
    stack: list[list] = [[None, 0]]
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            stack.append([event.anchor, 1])
            total += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
            stack[-1][1] += size
            sizes[anchor] = size
        elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            size = sizes.get(event.anchor, 1) if isinstance(event, yaml.AliasEvent) else 1
            stack[-1][1] += size
            total += size
            if isinstance(event, yaml.ScalarEvent):
                sizes[event.anchor] = 1
        if total > MAX_YAML_NODES:
            raise UserError(
                f"YAML config: expands to more than {MAX_YAML_NODES} nodes through its "
                f"aliases (*name); write the values out"
            )
    return yaml_load(text)


RUN_FILES = ("config.yaml", "metrics.csv", "hparams.yaml")
"""Files of a run's log folder that a new run would replace."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside their path, then renamed: a failed write
    (a full disk) leaves the previous file, never a truncated one, at the final path."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}: storage_options are not supported")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


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
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/mAP20",  # OANet's mAP20 without RANSAC, validation split
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # The data's side channels and geometry follow from the network: set only in model.net.
        parser.link_arguments("model.net.side_info", "data.side_info", apply_on="parse")
        parser.link_arguments("model.net.geometry", "data.geometry", apply_on="parse")
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="resume from this checkpoint; 'last' takes checkpoint.dirpath/last.ckpt",
        )

    def instantiate_trainer(self, **kwargs) -> Trainer:
        """The trainer, writing its checkpoints with :class:`AtomicCheckpointIO`."""
        trainer = super().instantiate_trainer(**kwargs)
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def before_instantiate_classes(self) -> None:
        trainer = self.config.trainer
        if trainer.precision is None and torch.cuda.is_available():
            trainer.precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def resume_path(cli: LightningCLI, ckpt_path: str | None) -> str | None:
    """The checkpoint ``--ckpt_path`` names, checked; ``last`` is checkpoint.dirpath/last.ckpt.

    Raises FileNotFoundError or ValueError (one line naming the file) for a missing
    ``last.ckpt``, a file that is not a training checkpoint, or weights of another architecture.
    """
    if ckpt_path is None or ckpt_path.split(":")[0] in RESUME_KEYWORDS:
        return ckpt_path
    if ckpt_path == "last":
        dirpath = cli.trainer.checkpoint_callback.dirpath
        if dirpath is None:
            raise UserError(
                "--ckpt_path last: checkpoint.dirpath is not set; give the checkpoint file"
            )
        last = (
            Path(dirpath)
            / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        )
        if not last.is_file():
            raise FileNotFoundError(
                f"--ckpt_path last: no {last} to resume from (leave out --ckpt_path "
                f"to start a new run)"
            )
        ckpt_path = str(last)
    return str(check_resumable(ckpt_path, cli.model))


def check_new_log_dir(trainer: Trainer) -> None:
    """FileExistsError naming the folder when the run's log folder (``trainer.log_dir``) holds
    an earlier run's config.yaml or metrics.csv, which this run would replace."""
    log_dir = Path(trainer.log_dir or trainer.default_root_dir)
    found = [name for name in RUN_FILES if (log_dir / name).exists()]
    if found:
        raise FileExistsError(
            f"{log_dir}: holds an earlier run's {', '.join(found)}; choose another "
            f"--trainer.default_root_dir or --trainer.logger.init_args.version"
        )


def check_label_px(model: CorrNetModule, data: CorrNetDataModule) -> None:
    """ValueError for ``model.loss.label_px`` with a training file that lacks the intrinsics: its
    pixels would be normalised units (the identity K), and every labelled inlier would pass."""
    if model.loss_fn.label_px is None:
        return
    for spec in data.train_specs:
        path = check_data_spec(spec)
        if path is not None:
            OANetPairs(path).require(
                INTRINSICS_KEYS,
                "the intrinsics that model.loss.label_px needs (a threshold "
                "in pixels); leave it null or use a file that has them",
            )


def shipped_configs(argv: Sequence[str]) -> list[str]:
    """``argv`` with each ``--config NAME`` (or ``--config=NAME``) that has no suffix replaced
    by the shipped file (:func:`corrnet.commands.config_path`)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + config_path(arg.split("=", 1)[1])
        elif arg == "--config" and i + 1 < len(out):
            out[i + 1] = config_path(out[i + 1])
    return out


def main(argv: Sequence[str] | None = None, prog: str = "corrnet train") -> int:
    """Train; bad input (data, config values, ``--ckpt_path``) ends with one line, exit 2."""
    args = shipped_configs(sys.argv[1:] if argv is None else argv)

    set_loader("yaml", bounded_yaml_load, exceptions=(yaml.YAMLError,))

    def run() -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=ARGS_AND_ARGV)
            cli = CorrNetCLI(
                CorrNetModule,
                CorrNetDataModule,
                run=False,
                args=args,
                seed_everything_default=0,
                save_config_kwargs={"overwrite": False},
                parser_kwargs={"exit_on_error": False, "prog": prog},
            )
        check_new_log_dir(cli.trainer)
        check_label_px(cli.model, cli.datamodule)
        ckpt_path = resume_path(cli, cli.config.ckpt_path)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=NOT_RESUMABLE, category=PossibleUserWarning)
            cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=ckpt_path, weights_only=True)

    return run_command(prog, run, USER_ERRORS + (argparse.ArgumentError,))
