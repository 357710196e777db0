"""LightningModule: CorrNet, its loss, and pose validation without RANSAC."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from corrnet.checkpoint import adapt_input_channels, load_state, read_weights
from corrnet.models import CorrNet, CorrNetConfig, CorrNetLoss


class CorrNetModule(L.LightningModule):
    """Trains :class:`~corrnet.models.CorrNet` on batches of matched pairs.

    Validation logs the task's metrics (:meth:`corrnet.tasks.Task.validation_metrics`; its
    :attr:`~corrnet.tasks.Task.main_metric` on the progress bar): OANet's mAP and the pose AUCs
    without RANSAC (two-view) or, for ``net.geometry: rigid``, the registration recall
    ``val/RR`` of the network's weighted Kabsch transform, and the mean precision and recall
    of the matches it calls inliers.

    Args:
        net: the architecture (``configs/model/*.yaml``); its ``side_info`` also sets the
            data module's (``train.py`` links them).  A plain dict, as stored in checkpoints
            (both formats, see :meth:`CorrNetConfig.from_dict`), is converted.
        loss: keyword arguments of :class:`~corrnet.models.CorrNetLoss`.
        lr: Adam learning rate (OANet uses 1e-3).
        weight_decay: Adam weight decay.
        init_weights: start from these weights (an exported ``.pt`` such as
            ``corrnet/pretrained/corrnet-synthetic.pt``, or a Lightning ``.ckpt``) instead of
            a random initialisation; ``net`` must describe the same architecture, except that
            its input channels may differ (:func:`corrnet.checkpoint.adapt_input_channels`:
            new channels start at zero weight, dropped ones are removed).  The step
            counter and optimiser start afresh (``--ckpt_path`` resumes a run instead).
        reset_graph_heads: with ``init_weights``, re-initialise every stage's graph head with
            its gate open (weights trained without the graph-logit loss have closed gates,
            which no gradient reopens).
    """

    def __init__(
        self,
        net: CorrNetConfig = CorrNetConfig(),
        loss: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        init_weights: str | None = None,
        reset_graph_heads: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(net, Mapping):  # Lightning's load_from_checkpoint passes the saved dict
            net = CorrNetConfig.from_dict(net)
        # Plain data only, so that checkpoints load with weights_only=True.
        self.save_hyperparameters(
            {
                "net": net.to_dict(),
                "loss": loss,
                "lr": lr,
                "weight_decay": weight_decay,
                "init_weights": init_weights,
                "reset_graph_heads": reset_graph_heads,
            }
        )
        self.net = CorrNet(net)
        if init_weights is not None:
            path = Path(os.path.expandvars(os.path.expanduser(init_weights)))
            source, state = read_weights(path)
            if source.channels != net.channels:
                state = adapt_input_channels(state, source, net, path)
            load_state(self.net, state, path)
            if reset_graph_heads:
                for stage in self.net.stages:
                    stage.reset_graph_head()
        self.task = net.task
        self.loss_fn = CorrNetLoss(**(loss or {}), task=self.task)
        self._val: list[torch.Tensor] = []

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, Any]:
        """features (B, N, C), optional mask (B, N) bool -> the network's output dict."""
        return self.net(features, mask)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch["features"], batch.get("mask"))
        total, parts = self.loss_fn(out, batch, self.global_step)
        bs = batch["features"].shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, batch_size=bs)
        return total

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Records per pair (B, 3): the task's score (:meth:`corrnet.tasks.Task.validation_scores`;
        two-view: the pose error in degrees of ``eval.py``'s ``corrnet`` method, rigid: 1.0
        where the network's own Kabsch transform registers the pair) and the precision and
        recall of the matches it calls inliers, as the report scores them."""
        out = self(batch["features"], batch.get("mask"))
        selected, score = self.task.validation_scores(out, batch)
        labels = batch["labels"] > 0.5
        if "mask" in batch:
            labels = labels & batch["mask"]
        tp = (selected & labels).sum(-1).double()
        precision = tp / selected.sum(-1).clamp_min(1)
        recall = tp / labels.sum(-1).clamp_min(1)
        self._val.append(torch.stack([score, precision, recall], -1))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        # every rank's pairs (DDP splits the validation set); (P, 3) on a single device
        v = self.all_gather(torch.cat(self._val)).reshape(-1, 3).cpu()
        self._val.clear()
        score, precision, recall = v.unbind(-1)
        main = self.task.main_metric
        metrics = self.task.validation_metrics(score.numpy())
        metrics.update(precision=float(precision.mean()), recall=float(recall.mean()))
        self.log_dict({f"val/{k}": v for k, v in metrics.items() if k != main})
        self.log(f"val/{main}", metrics[main], prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
