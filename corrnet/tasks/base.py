"""The :class:`Task` interface: everything that differs between CorrNet's problems.

A task is chosen by its :attr:`Task.name`, the value of ``model.net.geometry``.  Every block of
the network, the classification loss, the training loop and the evaluation report are shared;
a task supplies the coordinates and the geometric head (:meth:`Task.normalise`,
:meth:`Task.estimate`), its loss term, its validation score, its datasets and its evaluation.

This module and the task modules import nothing heavy at import time (``corrnet COMMAND
--help`` reads the tasks' method names without torch); each method imports what it needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import argparse

    import numpy as np
    import torch
    from torch.utils.data import Dataset

    from corrnet.eval.evaluate import Predictor
    from corrnet.models.loss import CorrNetLoss


class Task:
    """One problem CorrNet solves.  Subclasses set the class attributes and the methods.

    Attributes:
        name: the value of ``model.net.geometry`` (stored in checkpoints).
        label: the problem in messages (``"two-view"``).
        pairs: its data in messages (``"two-view pairs"``).
        coords: leading coordinate channels per match; the rest (side information) passes
            through :meth:`normalise` unchanged.
        main_metric: the validation metric training monitors (``val/<main_metric>``).
        methods: the evaluation methods, in the report's order (the default of ``--methods``).
        network_methods: those of :attr:`methods` that need the network.
        label_px: whether ``model.loss.label_px`` (positives within a pixel error) applies.
        weights: the file name of the default shipped weights in ``corrnet/pretrained``.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    pairs: ClassVar[str]
    coords: ClassVar[int]
    main_metric: ClassVar[str]
    methods: ClassVar[tuple[str, ...]]
    network_methods: ClassVar[tuple[str, ...]]
    label_px: ClassVar[bool] = False
    has_two_views: ClassVar[bool] = False
    """Whether :meth:`swap_views` exists (symmetric inference)."""
    weights: ClassVar[str]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # ------------------------------------------------------------------ network

    def normalise(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The network's input from the matches x (B, N, C), mask (B, N) bool or None."""
        raise NotImplementedError

    def estimate(self, coords: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """The geometric estimate from raw coordinates (B, K, coords) and weights (B, K)."""
        raise NotImplementedError

    def swap_views(self, x: torch.Tensor, side_info: bool | Sequence[str]) -> torch.Tensor:
        """The network input x (B, N, C) of the same matches with the two views in the other
        order, for symmetric inference (:func:`corrnet.models.make_predictor`, which refuses
        a task without :attr:`has_two_views`)."""
        raise NotImplementedError

    @property
    def channels(self) -> tuple[str, ...] | None:
        """The side-information channels its data have (names of
        :data:`corrnet.channels.CHANNELS`); None: all of them."""
        return None

    def accepts(self, channels: Sequence[str]) -> bool:
        """Whether the network of this task can read the side-information ``channels``."""
        return self.channels is None or set(channels) <= set(self.channels)

    # ------------------------------------------------------------------ training

    def geometric_loss(
        self,
        loss: CorrNetLoss,
        out: Mapping[str, Any],
        batch: Mapping[str, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> tuple[str, float, int, torch.Tensor]:
        """The geometric term of ``loss``'s settings on the network output ``out``: its name in
        the logged parts, weight, first step, and value (scalar float32)."""
        raise NotImplementedError

    def validation_scores(
        self, out: Mapping[str, Any], batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pair of a validation batch: the matches called inliers (B, N) bool and the
        score (B,) float64 that :meth:`validation_metrics` summarises."""
        raise NotImplementedError

    def validation_metrics(self, scores: np.ndarray) -> dict[str, float]:
        """The validation metrics of all pairs' scores (P,), :attr:`main_metric` among them."""
        raise NotImplementedError

    # ------------------------------------------------------------------ data

    def recognises(self, path: Path) -> bool:
        """Whether the HDF5 file ``path`` holds this task's pairs (read from its layout)."""
        raise NotImplementedError

    def open_file(self, path: Path, side_info: bool | Sequence[str]) -> Dataset:
        """The pairs of a prepared file with the input channels ``side_info``; errors name
        the file and the missing keys."""
        raise NotImplementedError

    def synthetic(
        self,
        length: int,
        seed: int,
        num_matches: int,
        side_info: bool | Sequence[str],
        mode: str,
    ) -> Dataset:
        """``length`` synthetic pairs of ``num_matches`` matches from ``seed`` (``mode``: the
        two-view generator's scenes, ignored where a generator has none)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation

    def default_weights(self) -> Path:
        """The shipped weights that evaluation uses without ``--checkpoint``."""
        return Path(__file__).parents[1] / "pretrained" / self.weights

    def evaluate(
        self,
        dataset: Dataset,
        predictor: Predictor | None,
        methods: Sequence[str],
        args: argparse.Namespace,
        name: str,
    ) -> Any:
        """The evaluation result of ``methods`` on ``dataset`` (``corrnet eval``'s parsed
        ``args``: workers, estimators, batch size, progress), named ``name`` in the report."""
        raise NotImplementedError

    def render(self, folder: Path, dataset: Dataset, result: Any, count: int) -> None:
        """PNGs of the ``count`` worst and best pairs of ``result`` under ``folder``."""
        raise NotImplementedError
