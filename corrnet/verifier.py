"""Verify matches you already have: the network's kept matches, then PoseLib's pose on them.

    verifier = corrnet.Verifier()                       # loads the shipped weights once
    v = verifier.verify(kpts1, kpts2, K1, K2, ratios=r, mutuals=m)
    v.R, v.t, v.inliers, v.confident, v.warnings
    results = verifier.verify_many([dict(kpts1=..., kpts2=..., K1=..., K2=..., ...), ...])

The pipeline is ``corrnet match``'s and ``eval.py``'s ``corrnet+poselib``: the network scores
every match (``scores`` = sigmoid(logit)), keeps those with logit > 0 or else its 8 best
(:func:`corrnet.eval.predict.kept_matches`), and PoseLib's LO-RANSAC
(:class:`corrnet.eval.estimators.PoseLibEstimator`, threshold in pixels) estimates the pose on
the kept matches in pixels.  Keypoints are pixels (pixel-centre convention: the centre of the
top-left pixel is (0, 0)); K is (3, 3) or (fx, fy, cx, cy) in pixels; the motion is
x2 = R x1 + t with |t| = 1.

The network's inputs beyond the coordinates follow from the weights
(:func:`side_channels`): the shipped weights read the Lowe ratio and the mutual
nearest-neighbour flag of every match, so ``ratios`` and ``mutuals`` are required with them.
``scales`` and ``angles`` (OpenCV ``KeyPoint.size`` and ``KeyPoint.angle`` in degrees) are
validated and passed on only to weights that read them.  A verifier of the default weights
(no checkpoint given) verifies a pair without ``ratios`` and ``mutuals`` but with
``scales1/2`` and ``angles1/2`` (ORB or AKAZE matches, or any matcher without a Lowe ratio)
with the shipped ratio-free weights (:data:`corrnet.checkpoint.PRETRAINED_RATIO_FREE`),
loaded on first use; ``Verification.weights`` names the weights of each result.

Confidence (:func:`confidence`): a pose is flagged ``confident=False``, with one warning per
cause, when the estimator has fewer than :data:`MIN_INLIERS` inliers, when it rejects most of
the kept matches (inlier share below :data:`MIN_INLIER_SHARE`), or when the inliers show
less than :data:`MIN_PARALLAX_DEG` of parallax (:func:`parallax_deg`: the median angle a
pure rotation leaves between the inliers' bearing vectors): a pure rotation or an image
matched with itself, whose translation is undefined.  How the thresholds were chosen:
``docs/verifier.md``.
"""

from __future__ import annotations

import copy
import inspect
import math
import multiprocessing
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corrnet.channels import channel_keys, network_input
from corrnet.checkpoint import PRETRAINED, PRETRAINED_RATIO_FREE, load_model
from corrnet.datasets.collate import collate_pairs
from corrnet.datasets.oanet_hdf5 import MAX_PIXELS
from corrnet.datasets.sample import MIN_MATCHES, intrinsics, normalized_matches
from corrnet.errors import UserError
from corrnet.eval import estimators
from corrnet.eval.evaluate import NETWORK_THREADS, default_workers, run_pose_jobs, torch_threads
from corrnet.eval.predict import kept_matches
from corrnet.geometry import essential_from_pose
from corrnet.models import CorrNetConfig
from corrnet.models.inference import make_predictor
from corrnet.tasks import TwoView

MIN_INLIERS = 50
"""Fewest estimator inliers of a confident pose (docs/verifier.md: unrelated pairs reach 24
on synthetic and 83 on real-train images, 44 but for one)."""
MIN_INLIER_SHARE = 0.2
"""Smallest share of the kept matches the estimator may call inliers in a confident pose
(docs/verifier.md: unrelated synthetic pairs reach 0.15, same-scene ones 0.145 at the least,
0.225 at the 5th percentile)."""
MIN_PARALLAX_DEG = 0.2
"""Smallest :func:`parallax_deg` of the inliers, in degrees, of a confident pose
(docs/verifier.md: pure rotations 0.17 at the 95th percentile; below 0.2 deg the median
translation error of synthetic pairs is 5.7 deg and more)."""
TRANSLATION_PARALLAX_DEG = 0.01
"""Smallest :func:`parallax_deg` at which t is reported at all: below, the inliers hardly move
(an image matched with itself gives under 1e-3 deg), while real pairs of short baseline between
this and :data:`MIN_PARALLAX_DEG` (real-dev's lund_door, 0.12-0.2 deg) still have t right to a
fraction of a degree, flagged not confident."""
METHOD = "corrnet+poselib"
"""The name of the pipeline in ``eval.py``'s tables."""
PAD_SEED = 0
"""Seed of the padding draw of every batch of :meth:`Verifier.verify_many`: a batch gives the
same results on every run."""

CHANNEL_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "ratio": ("ratios",),
    "mutual": ("mutuals",),
    "log_scale_ratio": ("scales1", "scales2"),
    "orientation": ("angles1", "angles2"),
    "descriptor_distance": ("distances",),
}
"""The :meth:`Verifier.verify` arguments each input channel (:data:`corrnet.channels.CHANNELS`)
is computed from."""
ARGUMENT_HELP: dict[str, str] = {
    "ratios": "the Lowe ratio d1/d2 of each match (nearest over second-nearest descriptor "
    "distance, as corrnet.datasets.prepare.nearest_neighbours gives)",
    "mutuals": "whether each match is a mutual nearest neighbour (bool)",
    "scales1": "KeyPoint.size of each match's keypoint in image 1",
    "scales2": "KeyPoint.size of each match's keypoint in image 2",
    "angles1": "KeyPoint.angle (degrees) of each match's keypoint in image 1",
    "angles2": "KeyPoint.angle (degrees) of each match's keypoint in image 2",
    "distances": "the L2 distance between each match's two SIFT descriptors (OpenCV's scale)",
}
"""What each optional per-match argument holds (named in the error for a missing one)."""
RATIO_ARGUMENTS = ("ratios", "mutuals")
"""What the default weights read beyond the keypoints: descriptor matching's side information."""
RATIO_FREE_ARGUMENTS = ("scales1", "scales2", "angles1", "angles2")
"""What the ratio-free weights (:data:`corrnet.checkpoint.PRETRAINED_RATIO_FREE`) read instead."""


def side_channels(config: CorrNetConfig, source: str = "checkpoint") -> tuple[str, ...]:
    """The input channels after the coordinates (names of :data:`CHANNEL_ARGUMENTS`) that
    weights of ``config`` read; UserError naming ``source`` for weights the verifier cannot
    feed (a rigid network)."""
    if not isinstance(config.task, TwoView):
        raise UserError(
            f"{source}: a {config.geometry} network; the verifier feeds {TwoView.label} weights"
        )
    return config.channels


def as_intrinsics(value: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """K (3, 3) float64 from (fx, fy, cx, cy) or a (3, 3) matrix without skew; ValueError
    naming ``name`` for a wrong count, non-finite numbers or a non-positive focal length."""
    try:
        a = np.asarray(_numpy(value), np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{name}: expected 4 numbers FX FY CX CY, got {value!r}") from None
    if a.shape == (3, 3):
        if a[0, 1] != 0 or a[1, 0] != 0 or not np.array_equal(a[2], [0.0, 0.0, 1.0]):
            raise UserError(
                f"{name}: expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {a.tolist()}"
            )
        a = a[[0, 1, 0, 1], [0, 1, 2, 2]]
    if a.shape != (4,):
        raise UserError(f"{name}: expected 4 numbers FX FY CX CY (or a 3x3 matrix), got {a.size}")
    if not np.isfinite(a).all():
        raise UserError(f"{name}: expected finite numbers, got {a.tolist()}")
    if (a[:2] <= 0).any():
        raise UserError(
            f"{name}: expected positive focal lengths FX FY in pixels, got {a[0]:g} {a[1]:g}"
        )
    if (np.abs(a) > MAX_PIXELS).any():
        raise UserError(f"{name}: expected |values| <= {MAX_PIXELS:g} pixels, got {a.tolist()}")
    return intrinsics(*a)


def _numpy(value: Any) -> Any:
    """A torch tensor as a numpy array on the CPU; anything else unchanged."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _keypoints(name: str, value: Any, n: int | None, fewest: int = MIN_MATCHES) -> np.ndarray:
    """(N, 2) finite float64 pixels, N >= ``fewest`` (and = n when given)."""
    a = np.asarray(_numpy(value), dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or (n is not None and len(a) != n):
        expected = "(N, 2)" if n is None else f"({n}, 2) like kpts1"
        raise UserError(f"{name}: expected pixel coordinates of shape {expected}, got {a.shape}")
    if len(a) < fewest:
        raise UserError(f"{name}: expected at least {MIN_MATCHES} matches, got {len(a)}")
    bad = np.flatnonzero(~np.isfinite(a).all(1))
    if len(bad):
        raise UserError(
            f"{name}: expected finite pixel coordinates, got NaN or inf in {len(bad)} rows "
            f"(first: row {bad[0]})"
        )
    return a


def _per_match(name: str, value: Any, n: int) -> np.ndarray:
    """A finite (n,) float64 array, with its argument's constraints (ValueError naming it)."""
    a = np.asarray(_numpy(value))
    if a.shape != (n,):
        raise UserError(f"{name}: expected one value per match, shape ({n},), got {a.shape}")
    try:
        a = a.astype(np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{name}: expected numbers, got dtype {a.dtype}") from None
    problem = None
    if not np.isfinite(a).all():
        problem = "finite values, got NaN or inf"
    elif name == "ratios" and (a < 0).any():
        problem = f"ratios >= 0, got {a.min():g}"
    elif name == "mutuals" and not np.isin(a, (0.0, 1.0)).all():
        problem = "booleans (0 or 1)"
    elif name.startswith("scales") and (a <= 0).any():
        problem = f"positive sizes in pixels, got {a.min():g}"
    if problem:
        raise UserError(f"{name}: expected {problem}")
    return a


@dataclass
class Verification:
    """The verdict on N matches of one image pair.

    kpts1, kpts2 (N, 2) pixels; xs (N, 4) normalised [x1, y1, x2, y2]; K1, K2 (3, 3) pixels.
    logits (N,), scores (N,) = sigmoid(logits), the network's inlier probabilities;
    kept (N,) bool, the matches the network keeps; inliers (N,) bool, the estimator's
    (a subset of kept).  R (3, 3), t (3,) unit, E (3, 3) = [t]x R: x2 = R x1 + t; NaN when
    the estimator found no pose.  parallax_deg: :func:`parallax_deg` of the inliers, what a
    pure rotation leaves unexplained (NaN without pose).  confident: False when a check of
    :func:`confidence` failed, with one line per cause in ``warnings``.  times_ms:
    ``network`` (this pair's share of its batch) and ``estimator``.  weights: the file of the
    weights that scored the matches (None for a pair of fewer than 8 matches, which no
    network sees).
    """

    kpts1: np.ndarray
    kpts2: np.ndarray
    xs: np.ndarray
    K1: np.ndarray
    K2: np.ndarray
    logits: np.ndarray
    scores: np.ndarray
    kept: np.ndarray
    inliers: np.ndarray
    R: np.ndarray
    t: np.ndarray
    E: np.ndarray
    parallax_deg: float
    confident: bool
    warnings: list[str]
    estimator: str
    threshold: float
    threshold_unit: str = "px"
    times_ms: dict[str, float] = field(default_factory=dict)
    weights: Path | None = None

    @property
    def num_inliers(self) -> int:
        """Number of estimator inliers."""
        return int(self.inliers.sum())

    @property
    def num_kept(self) -> int:
        """Number of matches the network keeps."""
        return int(self.kept.sum())

    @property
    def has_pose(self) -> bool:
        """Whether the estimator found a pose (R, t finite)."""
        return bool(np.isfinite(self.R).all() and np.isfinite(self.t).all())

    @property
    def translation_known(self) -> bool:
        """Whether t (and E) are determined: a pose whose inliers have at least
        :data:`TRANSLATION_PARALLAX_DEG` of parallax (below, a rotation alone explains them)."""
        return self.has_pose and self.parallax_deg >= TRANSLATION_PARALLAX_DEG


def parallax_deg(xs: np.ndarray) -> float:
    """What a pure rotation leaves unexplained in matches xs (M, 4) normalised: the median
    angle in degrees between f2 and Q f1 over the bearings f1, f2 (unit vectors), Q the rotation
    that best aligns them (orthogonal Procrustes).  About the noise (~0.1 deg) for a pure
    rotation or the same image, where the translation is undefined; NaN for M = 0."""
    if len(xs) == 0:
        return math.nan
    f1, f2 = (np.column_stack([xy, np.ones(len(xy))]) for xy in (xs[:, :2], xs[:, 2:]))
    f1 /= np.linalg.norm(f1, axis=1, keepdims=True)
    f2 /= np.linalg.norm(f2, axis=1, keepdims=True)
    U, _, Vt = np.linalg.svd(f2.T @ f1)
    Q = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    g1 = f1 @ Q.T
    # atan2(|g1 x f2|, g1 . f2) is accurate near 0, where acos is not
    angles = np.arctan2(np.linalg.norm(np.cross(g1, f2), axis=1), (g1 * f2).sum(1))
    return float(np.degrees(np.median(angles)))


def confidence(num_inliers: int, num_kept: int, parallax: float, has_pose: bool) -> list[str]:
    """The reasons not to trust a pose (empty: confident); thresholds :data:`MIN_INLIERS`,
    :data:`MIN_INLIER_SHARE`, :data:`MIN_PARALLAX_DEG`."""
    if not has_pose:
        return [f"no pose: the estimator found {num_inliers} inliers among {num_kept} kept matches"]
    reasons = []
    if num_inliers < MIN_INLIERS:
        reasons.append(
            f"too few inliers: {num_inliers} (a confident pose has at least {MIN_INLIERS}); "
            f"the images may not show the same scene"
        )
    share = num_inliers / max(num_kept, 1)
    if share < MIN_INLIER_SHARE:
        reasons.append(
            f"the estimator rejects most kept matches: {num_inliers} inliers of {num_kept} "
            f"kept ({share:.0%}, a confident pose has at least {MIN_INLIER_SHARE:.0%})"
        )
    if parallax < MIN_PARALLAX_DEG:
        reasons.append(
            f"translation undefined: the inliers' median parallax is {parallax:.3f} deg "
            f"(at least {MIN_PARALLAX_DEG:g} deg needed): a rotation alone explains the "
            f"matches (the same image, a pure rotation or a very short baseline), so t is "
            f"unreliable"
        )
    return reasons


@dataclass(frozen=True)
class _Network:
    """Loaded weights: their file, the model, the channels it reads and its predictor."""

    weights: Path
    model: torch.nn.Module
    channels: tuple[str, ...]
    predictor: Any

    @staticmethod
    def load(weights: Path, device: torch.device) -> _Network:
        """The weights of the file ``weights`` on ``device`` (corrnet.checkpoint's checks)."""
        model = load_model(weights, device)
        channels = side_channels(model.config, str(weights))
        return _Network(weights, model, channels, make_predictor(model))

    @property
    def needs(self) -> tuple[str, ...]:
        """The :meth:`Verifier.verify` arguments these weights read beyond keypoints and K."""
        return tuple(a for c in self.channels for a in CHANNEL_ARGUMENTS[c])


@dataclass
class _Prepared:
    """A validated pair: pixels, K, normalised matches, the network's features (N, C) and the
    network that reads them; features and network None for a pair of fewer than MIN_MATCHES
    matches, which gets no pose."""

    kpts1: np.ndarray
    kpts2: np.ndarray
    K1: np.ndarray
    K2: np.ndarray
    xs: np.ndarray
    features: torch.Tensor | None
    network: _Network | None = None


class Verifier:
    """The network (loaded once) and the estimator that verify putative matches.

    checkpoint: corrnet weights (default: the shipped ones, :data:`corrnet.checkpoint.PRETRAINED`,
    and for pairs given scales and angles but no ratios the ratio-free ones,
    :data:`corrnet.checkpoint.PRETRAINED_RATIO_FREE`: ``automatic``);
    device: the network's torch device; threshold: PoseLib's inlier threshold in pixels
    (default :data:`corrnet.eval.estimators.POSELIB_THRESHOLD`).  Raises FileNotFoundError /
    ValueError naming the file for unreadable or foreign weights, ValueError naming
    ``device`` or ``threshold`` for those.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        device: str | torch.device = "cpu",
        threshold: float | None = None,
    ) -> None:
        self.device = as_device(device)
        self.estimator = _estimator(threshold)
        self.automatic = checkpoint is None
        self.weights = Path(checkpoint) if checkpoint is not None else PRETRAINED
        start = time.perf_counter()
        network = _Network.load(self.weights, self.device)
        self.load_ms = (time.perf_counter() - start) * 1e3
        self.model, self.channels, self.predictor = (
            network.model,
            network.channels,
            network.predictor,
        )
        # shared with the copies of with_threshold: the ratio-free weights load once
        self._networks = {self.weights: network}

    @property
    def weight_files(self) -> tuple[Path, ...]:
        """The weights this verifier may score matches with: its checkpoint, or the shipped
        weights and, when ``automatic``, the ratio-free ones."""
        return (self.weights, PRETRAINED_RATIO_FREE) if self.automatic else (self.weights,)

    def _network(self, weights: Path) -> _Network:
        """The loaded weights ``weights`` (loaded on first use)."""
        if weights not in self._networks:
            self._networks[weights] = _Network.load(weights, self.device)
        return self._networks[weights]

    def _choose(self, given: Mapping[str, Any]) -> _Network:
        """The weights for a pair of the :meth:`verify` arguments ``given``: the ratio-free
        ones where automatic and the pair has scales and angles but no ratios nor mutuals;
        UserError naming what is needed where it has neither."""
        if not self.automatic or any(given[a] is not None for a in RATIO_ARGUMENTS):
            return self._networks[self.weights]
        if all(given[a] is not None for a in RATIO_FREE_ARGUMENTS):
            return self._network(PRETRAINED_RATIO_FREE)
        raise UserError(
            f"{', '.join(RATIO_ARGUMENTS)}: missing; the shipped weights need either "
            + " and ".join(f"{a}=(N,) {ARGUMENT_HELP[a]}" for a in RATIO_ARGUMENTS)
            + ", or (for the ratio-free weights, corrnet.checkpoint.PRETRAINED_RATIO_FREE) "
            + ", ".join(RATIO_FREE_ARGUMENTS)
            + "=(N,) each: KeyPoint.size and KeyPoint.angle (degrees) of each match's keypoints"
        )

    @property
    def threshold(self) -> float:
        """The estimator's inlier threshold in pixels."""
        return self.estimator.max_epipolar_error

    def with_threshold(self, threshold: float | None) -> Verifier:
        """This verifier (sharing its network) with another estimator threshold in pixels."""
        if threshold is None or threshold == self.threshold:
            return self
        other = copy.copy(self)
        other.estimator = _estimator(threshold)
        return other

    @property
    def needs(self) -> tuple[str, ...]:
        """The :meth:`verify` arguments the weights :attr:`weights` read beyond keypoints and K
        (an ``automatic`` verifier takes :data:`RATIO_FREE_ARGUMENTS` instead of
        :data:`RATIO_ARGUMENTS` as well)."""
        return self._networks[self.weights].needs

    def _prepare(
        self,
        kpts1: Any,
        kpts2: Any,
        K1: Any,
        K2: Any,
        ratios: Any = None,
        mutuals: Any = None,
        scales1: Any = None,
        scales2: Any = None,
        angles1: Any = None,
        angles2: Any = None,
        distances: Any = None,
        few_matches: bool = False,
    ) -> _Prepared:
        """Validate one pair's inputs (arguments of :meth:`verify`) and build its features
        (none for fewer than MIN_MATCHES matches where ``few_matches``, else UserError)."""
        fewest = 0 if few_matches else MIN_MATCHES
        uv1 = _keypoints("kpts1", kpts1, None, fewest)
        uv2 = _keypoints("kpts2", kpts2, len(uv1), fewest)
        Ks = as_intrinsics(K1, "K1"), as_intrinsics(K2, "K2")
        given = dict(
            ratios=ratios,
            mutuals=mutuals,
            scales1=scales1,
            scales2=scales2,
            angles1=angles1,
            angles2=angles2,
            distances=distances,
        )
        columns = {k: _per_match(k, v, len(uv1)) for k, v in given.items() if v is not None}
        xs = normalized_matches(uv1, uv2, *Ks)
        if len(uv1) < MIN_MATCHES:  # no network: nothing else needed
            return _Prepared(uv1, uv2, *Ks, xs, None)
        network = self._choose(given)
        missing = [name for name in network.needs if given[name] is None]
        if missing:
            hint = (
                "; or, without them, scales1/2 and angles1/2 with "
                "Verifier(corrnet.checkpoint.PRETRAINED_RATIO_FREE)"
                if {"ratios", "mutuals"} & set(missing)
                else ""
            )
            raise UserError(
                f"{', '.join(missing)}: missing; the weights {network.weights.name} read them: "
                "pass " + "; ".join(f"{name}=(N,) {ARGUMENT_HELP[name]}" for name in missing) + hint
            )
        pair = lambda a, b: np.stack([columns[a], columns[b]], -1)
        per_match = {
            "ratios": lambda: columns["ratios"],
            "mutuals": lambda: columns["mutuals"],
            "sizes": lambda: pair("scales1", "scales2"),
            "angles": lambda: pair("angles1", "angles2"),
            # the channel reads the nearest distance only (column 0)
            "dists": lambda: pair("distances", "distances"),
        }
        keys = channel_keys(network.channels)
        features = network_input(
            torch.as_tensor(xs, dtype=torch.float32),
            {k: torch.as_tensor(per_match[k]()) for k in keys},
            network.channels,
        )
        return _Prepared(uv1, uv2, *Ks, xs, features, network)

    def verify(
        self,
        kpts1: Any,
        kpts2: Any,
        K1: Any,
        K2: Any,
        ratios: Any = None,
        mutuals: Any = None,
        scales1: Any = None,
        scales2: Any = None,
        angles1: Any = None,
        angles2: Any = None,
        distances: Any = None,
    ) -> Verification:
        """Verify N matches of one pair.

        kpts1, kpts2: (N, 2) pixels of the matched keypoints (numpy or torch), N >= 8.
        K1, K2: (3, 3) or (fx, fy, cx, cy) in pixels.  ratios (N,) Lowe ratios, mutuals (N,)
        mutual-NN flags: required by weights with those channels (the shipped ones).
        scales1/2 (N,) ``KeyPoint.size``, angles1/2 (N,) ``KeyPoint.angle`` in degrees,
        distances (N,) descriptor distances: validated, read only by weights with such
        channels (:attr:`needs`).  Without ratios and mutuals, an ``automatic`` verifier
        verifies with the ratio-free weights, which read scales1/2 and angles1/2.
        Raises UserError (a ValueError) naming the argument for bad input.
        """
        pair = self._prepare(
            kpts1, kpts2, K1, K2, ratios, mutuals, scales1, scales2, angles1, angles2, distances
        )
        return self._run([pair], 1, 1)[0]

    def verify_many(
        self,
        pairs: Iterable[Mapping[str, Any] | Sequence[Any]],
        batch_size: int = 16,
        workers: int | None = None,
        pool: multiprocessing.pool.Pool | None = None,
        few_matches: bool = False,
    ) -> list[Verification]:
        """:meth:`verify` of many pairs: the network on ``batch_size`` pairs at a time (padded
        and masked, as :func:`corrnet.datasets.collate.collate_pairs` pads, the padding drawn
        with seed :data:`PAD_SEED`), the estimator in a pool of ``workers`` processes (default:
        the cores this process may use) started for this call, or in the caller's ``pool``
        (left open; its workers should keep OpenCV at one thread, as
        :func:`corrnet.eval.estimators.init_worker` does).  Each pair is a mapping of
        :meth:`verify`'s keyword arguments or a sequence of its positional ones; the results,
        in the pairs' order, are those of :meth:`verify` on each pair.  ``few_matches``: a pair
        of fewer than 8 matches gets a result without pose (``confident`` False, one warning)
        instead of an error.  Bad input raises ValueError naming the pair's position and the
        argument.
        """
        if not batch_size >= 1:
            raise UserError(f"batch_size: expected a positive count, got {batch_size}")
        names = list(inspect.signature(self.verify).parameters)
        prepared = []
        for i, pair in enumerate(pairs):
            args = dict(pair) if isinstance(pair, Mapping) else dict(zip(names, pair))
            unknown = sorted(set(args) - set(names)) or len(pair) > len(names)
            missing = [name for name in names[:4] if name not in args]
            if unknown or missing:
                raise UserError(
                    f"pairs[{i}]: expected verify's arguments {names} (the first 4 required), "
                    f"got {list(pair) if isinstance(pair, Mapping) else f'{len(pair)} values'}"
                )
            try:
                prepared.append(self._prepare(**args, few_matches=few_matches))
            except ValueError as err:
                raise UserError(f"pairs[{i}]: {err}") from None
        workers = min(default_workers() if workers is None else workers, len(prepared))
        return self._run(prepared, batch_size, workers, pool)

    def _run(
        self,
        pairs: list[_Prepared],
        batch_size: int,
        workers: int,
        pool: multiprocessing.pool.Pool | None = None,
    ) -> list[Verification]:
        """The network in padded batches (of the pairs of the same weights), kept rule, then
        the estimator jobs in a pool (pairs without features get a result without pose)."""
        short = {i for i, p in enumerate(pairs) if p.features is None}
        run = [p for i, p in enumerate(pairs) if i not in short]
        logits: list[np.ndarray] = [np.zeros(0)] * len(run)
        network_ms = [0.0] * len(run)
        by_weights: dict[Path, list[int]] = {}
        for k, p in enumerate(run):
            by_weights.setdefault(p.network.weights, []).append(k)
        for members in by_weights.values():
            predictor = run[members[0]].network.predictor
            for first in range(0, len(members), batch_size):
                chunk = members[first : first + batch_size]
                batch = collate_pairs(
                    [
                        {"xs": torch.from_numpy(run[k].xs), "features": run[k].features}
                        for k in chunk
                    ],
                    "pad",
                    generator=torch.Generator().manual_seed(PAD_SEED),
                )
                features, mask = batch["features"].to(self.device), batch["mask"]
                with torch_threads(NETWORK_THREADS):  # see NETWORK_THREADS
                    start = time.perf_counter()
                    # an all-real batch (one pair) runs as it does without padding: no mask
                    out = predictor(features, None if mask.all() else mask.to(self.device))
                    batch_logits = out["logits"].double().cpu()  # waits for the device
                    ms = (time.perf_counter() - start) * 1e3 / len(chunk)
                for row, k in zip(batch_logits, chunk):
                    logits[k] = row[: len(run[k].xs)].numpy()
                    network_ms[k] = ms
        kept = [kept_matches(torch.from_numpy(lg)[None])[0].numpy() for lg in logits]
        jobs = [
            (i, p.xs, p.K1, p.K2, [(METHOD, self.estimator, np.flatnonzero(k))])
            for i, (p, k) in enumerate(zip(run, kept))
        ]
        outcomes = dict(run_pose_jobs(jobs, workers, progress=False, pool=pool))
        results, k = [], 0
        for i, p in enumerate(pairs):
            if i in short:
                results.append(self._too_few(p))
                continue
            _, R, t, inliers, estimator_ms = outcomes[k][0]
            results.append(
                self._verification(
                    p, logits[k], kept[k], R, t, inliers, network_ms[k], estimator_ms
                )
            )
            k += 1
        return results

    def _too_few(self, p: _Prepared) -> Verification:
        """The result of a pair of fewer than MIN_MATCHES matches: no network, no pose."""
        n = len(p.xs)
        return Verification(
            p.kpts1,
            p.kpts2,
            p.xs,
            p.K1,
            p.K2,
            logits=np.full(n, np.nan),
            scores=np.full(n, np.nan),
            kept=np.zeros(n, bool),
            inliers=np.zeros(n, bool),
            R=np.full((3, 3), np.nan),
            t=np.full(3, np.nan),
            E=np.full((3, 3), np.nan),
            parallax_deg=math.nan,
            confident=False,
            warnings=[f"{n} matches; the network needs at least {MIN_MATCHES}"],
            estimator=self.estimator.name,
            threshold=self.threshold,
            times_ms={"network": 0.0, "estimator": 0.0},
        )

    def _verification(
        self,
        p: _Prepared,
        logits: np.ndarray,
        kept: np.ndarray,
        R: np.ndarray,
        t: np.ndarray,
        inliers: np.ndarray,
        network_ms: float,
        estimator_ms: float,
    ) -> Verification:
        R = np.asarray(R, np.float64).reshape(3, 3)
        t = np.asarray(t, np.float64).reshape(3)
        has_pose = bool(np.isfinite(R).all() and np.isfinite(t).all())
        E = np.full((3, 3), np.nan)
        if has_pose:
            t = t / np.linalg.norm(t)
            E = essential_from_pose(torch.from_numpy(R), torch.from_numpy(t)).numpy()
        parallax = parallax_deg(p.xs[inliers]) if has_pose else math.nan
        reasons = confidence(int(inliers.sum()), int(kept.sum()), parallax, has_pose)
        return Verification(
            p.kpts1,
            p.kpts2,
            p.xs,
            p.K1,
            p.K2,
            logits,
            1.0 / (1.0 + np.exp(-logits)),
            kept,
            inliers,
            R,
            t,
            E,
            parallax,
            not reasons,
            reasons,
            self.estimator.name,
            self.threshold,
            times_ms={"network": network_ms, "estimator": estimator_ms},
            weights=p.network.weights,
        )


def as_device(device: str | torch.device) -> torch.device:
    """A torch device; ValueError naming ``device`` for a bad or unavailable one."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UserError(f"device: {str(err).splitlines()[0]}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device: expected cpu, cuda or mps, got {device}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: {device} requested, but CUDA is not available here")
    return dev


def _estimator(threshold: float | None) -> estimators.PoseLibEstimator:
    """The one place that picks the estimator: PoseLib on pixels, as ``eval.py``'s
    ``corrnet+poselib`` runs it (threshold in pixels, default 1 px)."""
    if threshold is None:
        return estimators.PoseLibEstimator()
    if not (isinstance(threshold, int | float) and threshold > 0 and math.isfinite(threshold)):
        raise UserError(f"threshold: expected a positive number of pixels, got {threshold!r}")
    return estimators.PoseLibEstimator(max_epipolar_error=float(threshold))
