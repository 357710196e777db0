"""Verifying many pairs at once: the interface the pairs and COLMAP modes call, and its default.

A *verify-batch* is any callable ``verify_batch(pairs) -> results`` (:class:`VerifyBatch`):
a list of :class:`PairInput` (putative matches in pixels, intrinsics, optional side
information) in, one :class:`PairVerification` per pair out, in order.  Its ``name`` describes
the weights and settings and goes into the inputs digest of a resumable output.

:class:`BatchVerifier` is the default: corrnet's weights (the shipped ones unless a
checkpoint is given) loaded once, the network run on up to ``batch_size`` pairs per forward
pass (padded to the batch's largest N with a mask, :func:`corrnet.datasets.collate.collate_pairs`),
the kept matches (:func:`corrnet.eval.predict.kept_matches`) and PoseLib's LO-RANSAC on them,
as ``corrnet.match`` and ``eval.py``'s ``corrnet+poselib`` run it, in a pool of ``workers``
processes.  For a given batch the results do not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from corrnet.checkpoint import PRETRAINED, load_model
from corrnet.datasets.collate import collate_pairs
from corrnet.datasets.sample import MIN_MATCHES, network_input, normalized_matches
from corrnet.errors import UserError
from corrnet.eval import estimators
from corrnet.eval.evaluate import NETWORK_THREADS, torch_threads
from corrnet.eval.predict import kept_matches
from corrnet.geometry import essential_from_pose
from corrnet.models.inference import make_predictor

MIN_CONFIDENT_INLIERS = 15
"""A pose is ``confident`` with at least this many estimator inliers (COLMAP's default
``min_num_inliers`` of a verified two-view geometry)."""
PAD_SEED = 0
"""Seed of the padding draw of every batch: a batch gives the same results on every run."""


@dataclass(frozen=True)
class PairInput:
    """One pair's putative matches: match i joins ``kpts1[i]`` and ``kpts2[i]``.

    kpts1, kpts2 (N, 2) pixels (pixel-centre convention); K1, K2 (3, 3) pixel intrinsics;
    optional per match (N,): ``ratios`` (nearest / second-nearest descriptor distance),
    ``mutuals`` (bool, mutual nearest neighbours), ``scales1`` / ``scales2`` (keypoint size in
    pixels), ``angles1`` / ``angles2`` (keypoint orientation, degrees).  The field names are
    the keyword arguments of ``corrnet.Verifier.verify`` (:meth:`kwargs`).
    """

    kpts1: np.ndarray
    kpts2: np.ndarray
    K1: np.ndarray
    K2: np.ndarray
    ratios: np.ndarray | None = None
    mutuals: np.ndarray | None = None
    scales1: np.ndarray | None = None
    scales2: np.ndarray | None = None
    angles1: np.ndarray | None = None
    angles2: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.kpts1)
        if np.shape(self.kpts1) != (n, 2) or np.shape(self.kpts2) != (n, 2):
            raise UserError(
                f"kpts1, kpts2: expected two (N, 2) arrays, got {np.shape(self.kpts1)} "
                f"and {np.shape(self.kpts2)}"
            )
        for name in ("ratios", "mutuals", "scales1", "scales2", "angles1", "angles2"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (n,):
                raise UserError(f"{name}: expected shape ({n},), got {np.shape(value)}")

    def __len__(self) -> int:
        return len(self.kpts1)

    def kwargs(self) -> dict[str, np.ndarray | None]:
        """The fields as keyword arguments of ``Verifier.verify``."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class PairVerification:
    """One pair's verdict, N its putative matches (the fields of ``corrnet.Verification``).

    inliers (N,) bool (the estimator's, a subset of ``kept``); kept (N,) bool (the
    network's); scores (N,) sigmoid of the logits; logits (N,); R (3, 3), t (3,) unit and
    E (3, 3) = [t]x R for x2 = R x1 + t (NaN when no pose was found); num_inliers;
    confident: a pose with at least :data:`MIN_CONFIDENT_INLIERS` inliers; warnings: one
    line per problem of the pair (too few matches, no pose).
    """

    inliers: np.ndarray
    kept: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    R: np.ndarray
    t: np.ndarray
    E: np.ndarray
    num_inliers: int
    confident: bool
    warnings: list[str] = field(default_factory=list)


class VerifyBatch(Protocol):
    """Verifies a list of pairs; ``name`` identifies its weights and settings."""

    name: str

    def __call__(self, pairs: Sequence[PairInput]) -> list[PairVerification]:
        """One result per pair, in order; a pair without a pose is a result, not an error."""
        ...


def no_pose(
    n: int, warning: str, logits: np.ndarray | None = None, kept: np.ndarray | None = None
) -> PairVerification:
    """The result of a pair with N = ``n`` matches and no pose: NaN R, t, E, no inliers;
    ``logits`` and ``kept`` (N,) where the network ran (else NaN and nothing kept)."""
    logits = np.full(n, np.nan) if logits is None else logits
    nan = np.full((3, 3), np.nan)
    return PairVerification(
        np.zeros(n, bool),
        np.zeros(n, bool) if kept is None else kept,
        torch.sigmoid(torch.from_numpy(logits)).numpy(),
        logits,
        nan,
        np.full(3, np.nan),
        nan.copy(),
        0,
        False,
        [warning],
    )


def file_digest(path: str | Path) -> str:
    """SHA-1 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


class BatchVerifier:
    """The default verify-batch (module docstring).

    checkpoint: corrnet weights (default: the shipped ones); device: the network's torch
    device; threshold: PoseLib's inlier threshold in pixels (default 1); batch_size: pairs per
    forward pass; workers: processes for PoseLib (1: in this process).  ``times`` accumulates
    the seconds spent in the ``network`` and ``estimator`` stages.  Use as a context manager
    (or call :meth:`close`) to end the pool.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        device: str | torch.device = "cpu",
        threshold: float | None = None,
        batch_size: int = 16,
        workers: int = 1,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size: expected a positive number of pairs, got {batch_size}")
        weights = Path(checkpoint) if checkpoint is not None else PRETRAINED
        self.device = torch.device(device)
        self.model = load_model(weights, self.device)
        self.predictor = make_predictor(self.model)
        self.estimator = estimators.PoseLibEstimator(
            max_epipolar_error=estimators.POSELIB_THRESHOLD if threshold is None else threshold
        )
        self.batch_size = batch_size
        self.name = (
            f"corrnet weights sha1 {file_digest(weights)} + {self.estimator.name} "
            f"{self.estimator.max_epipolar_error:g} px seed {self.estimator.seed}"
        )
        self.times = {"network": 0.0, "estimator": 0.0}
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self._pool = (
            multiprocessing.get_context(method).Pool(workers, initializer=estimators.init_worker)
            if workers > 1
            else None
        )

    def __enter__(self) -> BatchVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the estimator pool."""
        if self._pool is not None:
            self._pool.close()  # queued tasks finish, the workers exit (no SIGTERM)
            self._pool.join()
            self._pool = None

    def _logits(self, xs: list[np.ndarray], pairs: Sequence[PairInput]) -> list[np.ndarray]:
        """The network's logits (N,) float64 of each pair, batch by batch (every pair N >= 8)."""
        side_info = self.model.config.side_info
        out: list[np.ndarray] = []
        for start in range(0, len(xs), self.batch_size):
            samples = []
            for k in range(start, min(start + self.batch_size, len(xs))):
                p = pairs[k]
                if side_info and (p.ratios is None or p.mutuals is None):
                    raise UserError(
                        "pairs: the weights take each match's ratio and mutual flag (side_info); "
                        "a pair without ratios or mutuals needs weights trained without them"
                    )
                sample = {"xs": torch.from_numpy(xs[k]).float()}
                if side_info:
                    sample["ratios"] = torch.as_tensor(p.ratios, dtype=torch.float32)
                    sample["mutuals"] = torch.as_tensor(p.mutuals, dtype=torch.float32)
                samples.append({"xs": sample["xs"], "features": network_input(sample, side_info)})
            batch = collate_pairs(samples, "pad", generator=torch.Generator().manual_seed(PAD_SEED))
            features, mask = batch["features"].to(self.device), batch["mask"].to(self.device)
            with torch_threads(NETWORK_THREADS):
                logits = self.predictor(features, mask)["logits"].double().cpu()
            out += [logits[i, : len(samples[i]["features"])].numpy() for i in range(len(samples))]
        return out

    def __call__(self, pairs: Sequence[PairInput]) -> list[PairVerification]:
        """Verify ``pairs`` (a pair with fewer than 8 matches gets a result without pose)."""
        results: list[PairVerification | None] = [None] * len(pairs)
        run = [k for k, p in enumerate(pairs) if len(p) >= MIN_MATCHES]
        for k, p in enumerate(pairs):
            if len(p) < MIN_MATCHES:
                results[k] = no_pose(len(p), f"{len(p)} matches; the network needs {MIN_MATCHES}")
        xs = {
            k: normalized_matches(pairs[k].kpts1, pairs[k].kpts2, pairs[k].K1, pairs[k].K2)
            for k in run
        }
        start = time.perf_counter()
        logits = dict(zip(run, self._logits([xs[k] for k in run], [pairs[k] for k in run])))
        self.times["network"] += time.perf_counter() - start
        kept = {k: kept_matches(torch.from_numpy(logits[k])[None])[0].numpy() for k in run}
        jobs = [
            (
                k,
                xs[k],
                np.asarray(pairs[k].K1, np.float64),
                np.asarray(pairs[k].K2, np.float64),
                [(self.estimator.name, self.estimator, np.flatnonzero(kept[k]))],
            )
            for k in run
        ]
        start = time.perf_counter()
        outcomes = (
            map(estimators.run_job, jobs)
            if self._pool is None
            else self._pool.imap(estimators.run_job, jobs)
        )
        for k, [(_, R, t, inliers, _)] in outcomes:
            results[k] = self._verdict(logits[k], kept[k], R, t, inliers)
        self.times["estimator"] += time.perf_counter() - start
        return results  # type: ignore[return-value]

    def _verdict(
        self,
        logits: np.ndarray,
        kept: np.ndarray,
        R: np.ndarray,
        t: np.ndarray,
        inliers: np.ndarray,
    ) -> PairVerification:
        """A pair's result from its logits (N,), kept (N,) and the estimate (R, t, inliers (N,))."""
        if not (np.isfinite(R).all() and np.isfinite(t).all()):
            return no_pose(
                len(logits),
                f"no pose found: {self.estimator.name} found {int(inliers.sum())} inliers "
                f"among the {int(kept.sum())} kept matches (of {len(kept)})",
                logits,
                kept,
            )
        t = t / np.linalg.norm(t)
        E = essential_from_pose(torch.from_numpy(R), torch.from_numpy(t)).numpy()
        num = int(inliers.sum())
        warnings = (
            []
            if num >= MIN_CONFIDENT_INLIERS
            else [f"{num} inliers; a confident pose needs {MIN_CONFIDENT_INLIERS}"]
        )
        return PairVerification(
            inliers,
            kept,
            torch.sigmoid(torch.from_numpy(logits)).numpy(),
            logits,
            R,
            t,
            E,
            num,
            num >= MIN_CONFIDENT_INLIERS,
            warnings,
        )
