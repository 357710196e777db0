"""Relative-pose evaluation of several methods on the same pairs.

Methods (:data:`METHODS`, named in :mod:`corrnet.constants`) are ``<subset>+<estimator>``
for every robust estimator of :data:`corrnet.eval.estimators.ESTIMATORS` (``ransac``,
``magsac``, ``poselib``) on one of the subsets of matches (:data:`corrnet.constants.SUBSETS`):
``corrnet`` (the matches the network keeps), ``ratio`` (Lowe ratio < 0.8) or all matches (the
estimator's name alone: ``ransac``, ``poselib``, ...); and two poses without RANSAC:

* ``corrnet``: :func:`corrnet.eval.predict.predict`, the robust pose from the network's
  weights (iteratively reweighted eight-point, cheirality test on its inliers);
* ``corrnet-8pt``: the plain weighted eight-point of the network's weights (CorrNet's own
  ``E``), cheirality test on the kept matches (``predict(..., robust=False)``).

The network keeps the matches with logit > 0; when it keeps fewer than
:data:`corrnet.eval.predict.FALLBACK_TOP_K` (8), the 8 matches with the largest logits stand
in (so that the five-point solver and the cheirality test have something to work on).

Inlier precision / recall of a pair are measured on the matches a method calls inliers:
the kept set for ``corrnet-8pt``, the robust inliers for ``corrnet``, the estimator's inlier
mask for every robust method.  0/0 counts as 0 (OANet's convention).  Timing: network plus
pose for ``corrnet`` / ``corrnet-8pt``, network plus estimator for ``corrnet+*``, the
estimator alone for the baselines; the network and the poses without RANSAC run in this
process on :data:`NETWORK_THREADS` torch thread(s) (the network on the predictor's device,
batch size 1 unless ``batch_size``: then a pair's network time is its batch's divided by the
batch size), the estimators in a pool of worker processes (one OpenCV thread each), every
estimate timed inside its worker: every time on the CPU is the cost on one core.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Subset
from tqdm import tqdm

from corrnet.constants import BASELINES, METHODS, NETWORK_METHODS, POSE_METHODS, ROBUST
from corrnet.errors import UserError

from ..datasets.collate import collate_pairs
from ..datasets.oanet_hdf5 import INTRINSICS_KEYS, OANetPairs
from ..errors import worker_signals
from ..geometry import pose_errors
from .estimators import (
    ESTIMATORS,
    PoseJob,
    PoseOutcome,
    PoseTask,
    RobustEstimator,
    init_worker,
    run_job,
)
from .predict import kept_matches, predict

RATIO_THRESHOLD = 0.8
NETWORK_THREADS = 1
"""Torch threads for the network: one core, as each estimator gets (with more threads than
idle cores, every op's OpenMP barrier waits for a descheduled thread)."""

Predictor = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
"""features (1, N, C) -> {"logits": (1, N), optional "weights": (1, N), ...} (CorrNet's output;
others are ignored)."""


@dataclass
class PairResult:
    """One method on one pair: pose errors (degrees), inlier scores, time (ms).

    ``selected`` (N,) bool: the matches the method calls inliers (kept or RANSAC inliers).
    """

    position: int
    index: int
    method: str
    err_R: float
    err_t: float
    precision: float
    recall: float
    ms: float
    selected: np.ndarray

    @property
    def err(self) -> float:
        """OANet's pair error max(err_R, err_t) in degrees."""
        return max(self.err_R, self.err_t)


@dataclass
class MethodResults:
    """Per-pair results (each with ``position`` and ``method``) of every method; ``pairs`` is
    the number of pairs evaluated."""

    dataset: str
    methods: tuple[str, ...]
    pairs: int
    results: list

    def of(self, method: str) -> list:
        """The results of ``method`` in pair order."""
        if method not in self.methods:
            raise KeyError(f"method {method!r} was not evaluated; evaluated: {list(self.methods)}")
        return sorted((r for r in self.results if r.method == method), key=lambda r: r.position)


@dataclass
class EvalResult(MethodResults):
    """Relative-pose results: :class:`PairResult` per pair and method."""

    results: list[PairResult]

    def errors(self, method: str) -> np.ndarray:
        """Pair errors (P,) in degrees of ``method`` in pair order."""
        return np.array([r.err for r in self.of(method)])


@dataclass
class _Pair:
    """What the evaluation keeps of a sample (all numpy, float64 geometry)."""

    index: int
    xs: np.ndarray
    labels: np.ndarray
    ratios: np.ndarray
    R: np.ndarray
    t: np.ndarray
    K1: np.ndarray
    K2: np.ndarray
    logits: torch.Tensor | None = None
    """(N,) the network's logits; None without network."""
    weights: torch.Tensor | None = None
    """(N,) the network's eight-point weights, where the predictor returns them."""
    kept: np.ndarray | None = None
    """(N,) bool: the matches the network keeps (:func:`kept_matches`); None without network."""
    network_ms: float = 0.0


def _read_pair(sample: Mapping) -> _Pair:
    """What the evaluation keeps of a sample, before the network has seen it."""
    f64 = lambda k: np.asarray(sample[k], dtype=np.float64)
    return _Pair(
        int(sample["index"]),
        f64("xs").reshape(-1, 4),
        f64("labels").reshape(-1) > 0.5,
        f64("ratios").reshape(-1),
        f64("R").reshape(3, 3),
        f64("t").reshape(3),
        f64("K1").reshape(3, 3),
        f64("K2").reshape(3, 3),
    )


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def default_workers() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def inlier_scores(selected: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Precision TP/|selected| and recall TP/|GT inliers| of one pair (0/0 -> 0)."""
    tp = float(np.sum(selected & labels))
    return tp / max(int(selected.sum()), 1), tp / max(int(labels.sum()), 1)


PER_MATCH_OUTPUTS = ("logits", "weights")
"""Network outputs with one value per match, (B, N)."""


def run_network(
    sample: Mapping, predictor: Predictor, outputs: Sequence[str] = PER_MATCH_OUTPUTS
) -> tuple[dict[str, torch.Tensor], float]:
    """The network on one pair, batch size 1, and its wall time in ms: see
    :func:`run_network_batch`."""
    rows, ms = run_network_batch([sample], predictor, outputs)
    return rows[0], ms


def run_network_batch(
    samples: Sequence[Mapping], predictor: Predictor, outputs: Sequence[str] = PER_MATCH_OUTPUTS
) -> tuple[list[dict[str, torch.Tensor]], float]:
    """The network on B pairs in one batch, and its wall time per pair in ms (the batch's / B,
    including the copy of the outputs to the host, which waits for an accelerator).

    Pairs of different N are padded to the largest as :func:`~corrnet.datasets.collate_pairs`
    pads (copies of the pair's own matches, seeded) and the predictor is called as
    ``predictor(features, mask)`` (``make_predictor``'s predictors take a mask); otherwise as
    ``predictor(features)``.  Returns per pair those of ``outputs`` that the predictor gives,
    each the pair's own row as float64 on the CPU (``logits`` (N,), ``weights`` (N,), a rigid
    network's ``R`` (3, 3), ``t`` (3,)).  Raises ValueError unless ``logits`` is (B, N) and
    ``weights``, where given, (B, N).
    """
    sizes = [len(s["features"]) for s in samples]
    batch = collate_pairs(  # the features under the key collate_pairs sizes pairs by
        [{"xs": torch.as_tensor(s["features"])} for s in samples],
        "pad",
        generator=torch.Generator().manual_seed(0),
    )
    features, mask = batch["xs"].float(), batch["mask"]
    b, n = mask.shape
    start = time.perf_counter()
    with torch.inference_mode():
        out = predictor(features) if min(sizes) == n else predictor(features, mask)
        shapes = {k: tuple(v.shape) for k, v in out.items() if isinstance(v, torch.Tensor)}
        if "logits" not in out or any(shapes.get(k, (b, n)) != (b, n) for k in PER_MATCH_OUTPUTS):
            raise ValueError(
                f"predictor: expected 'logits' ({b}, {n}) and optionally 'weights' ({b}, {n}), "
                f"got {shapes}"
            )
        host = {k: out[k].double().cpu() for k in outputs if k in out}
    ms = (time.perf_counter() - start) * 1e3 / b
    rows = [
        {k: v[i, :size] if k in PER_MATCH_OUTPUTS else v[i] for k, v in host.items()}
        for i, size in enumerate(sizes)
    ]
    return rows, ms


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block on ``threads`` torch threads (None: the current setting), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pose_without_ransac(
    pair: _Pair, method: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """R (3, 3), t (3,), the matches it calls inliers (N,) and the ms of :func:`predict`."""
    start = time.perf_counter()
    weights = None if pair.weights is None else pair.weights[None]
    out = predict(
        pair.logits[None],
        torch.from_numpy(pair.xs)[None],
        weights=weights,
        robust=method == "corrnet",
    )
    ms = (time.perf_counter() - start) * 1e3
    return out.R[0].numpy(), out.t[0].numpy(), out.inliers[0].numpy(), ms


def _result(
    pair: _Pair,
    position: int,
    method: str,
    R: np.ndarray,
    t: np.ndarray,
    selected: np.ndarray,
    ms: float,
) -> PairResult:
    """Pose errors and inlier scores of ``method``'s R (3, 3), t (3,) and selection (N,) bool."""
    err_R, err_t = pose_errors(
        torch.from_numpy(np.asarray(R, np.float64)),
        torch.from_numpy(np.asarray(t, np.float64)),
        torch.from_numpy(pair.R),
        torch.from_numpy(pair.t),
    )
    precision, recall = inlier_scores(selected, pair.labels)
    return PairResult(
        position, pair.index, method, float(err_R), float(err_t), precision, recall, ms, selected
    )


def _tasks(
    pair: _Pair, methods: Sequence[str], estimators: Mapping[str, RobustEstimator]
) -> list[PoseTask]:
    """The robust estimates of a pair: (method, estimator, indices of the matches it sees)."""
    subsets = {"all": np.ones(len(pair.xs), bool), "ratio": pair.ratios < RATIO_THRESHOLD}
    if pair.kept is not None:
        subsets["corrnet"] = pair.kept
    return [
        (m, estimators[ROBUST[m][1]], np.flatnonzero(subsets[ROBUST[m][0]]))
        for m in methods
        if m in ROBUST
    ]


def init_pool_worker() -> None:
    """Pool initializer: :func:`init_worker`, and Ctrl-C left to the command to report."""
    init_worker()
    worker_signals()


def run_pose_jobs(
    jobs: list[PoseJob],
    workers: int,
    progress: bool,
    pool: multiprocessing.pool.Pool | None = None,
) -> Iterator[tuple[int, list[PoseOutcome]]]:
    """run_job over jobs, in a pool of ``workers`` processes (in this process when 1), or in
    the caller's ``pool`` (left open; its workers should run :func:`init_worker` or otherwise
    keep OpenCV at one thread), whatever ``workers`` says."""
    bar = dict(total=len(jobs), desc="robust estimation", disable=not progress, unit="pair")
    if pool is not None:
        yield from tqdm(pool.imap_unordered(run_job, jobs), **bar)
        return
    if workers <= 1:
        threads = cv2.getNumThreads()
        init_worker()
        try:
            yield from tqdm(map(run_job, jobs), **bar)
        finally:
            cv2.setNumThreads(threads)
        return
    # fork where available: workers need nothing but numpy and OpenCV, and the caller's
    # script is not re-imported (spawn would re-run an unguarded ``__main__``).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, initializer=init_pool_worker) as pool:
        yield from tqdm(pool.imap_unordered(run_job, jobs), **bar)


def check_methods(
    methods: Sequence[str] | None,
    predictor: Predictor | None,
    known: Sequence[str],
    network: Sequence[str],
    baselines: Sequence[str],
) -> tuple[tuple[str, ...], list[str]]:
    """The methods to evaluate (None: all ``known``, or the ``baselines`` without predictor;
    duplicates dropped) and those of them that need the network; ValueError for an unknown
    method or a network method without predictor."""
    if methods is None:
        methods = known if predictor is not None else baselines
    methods = tuple(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(f"methods: expected some of {list(known)}, got {list(methods)}")
    needs_net = [m for m in methods if m in network]
    if needs_net and predictor is None:
        raise ValueError(f"methods {needs_net} need a predictor (a network); none was given")
    return methods, needs_net


def inputs_needed(
    methods: Sequence[str], estimators: Mapping[str, RobustEstimator] | None = None
) -> dict[str, list[str]]:
    """What ``methods`` read of a pair beyond its matches and ground truth, each with the methods
    that read it: ``"ratios"`` (the ``ratio`` subset) and ``"intrinsics"`` (an estimator that
    works in pixels, :attr:`RobustEstimator.needs_intrinsics`)."""
    estimators = {**ESTIMATORS, **(estimators or {})}
    needs: dict[str, list[str]] = {}
    for m in methods:
        if m in ROBUST:
            subset, name = ROBUST[m]
            if subset == "ratio":
                needs.setdefault("ratios", []).append(m)
            if estimators[name].needs_intrinsics:
                needs.setdefault("intrinsics", []).append(m)
    return needs


def check_inputs(
    dataset: object, methods: Sequence[str], estimators: Mapping[str, RobustEstimator] | None = None
) -> None:
    """BadPairError (a ValueError) naming the file and the groups it lacks where one of ``methods``
    needs them, for an :class:`~corrnet.datasets.OANetPairs` (or a ``Subset`` of one; other
    datasets have every input): a missing ``ratios`` group would read as zeros (every match
    passes the ratio test), missing intrinsics as the identity (a threshold in pixels becomes
    one in normalised units)."""
    pairs = dataset.dataset if isinstance(dataset, Subset) else dataset
    if not isinstance(pairs, OANetPairs):
        return
    groups = {"ratios": ("ratios",), "intrinsics": INTRINSICS_KEYS}
    for need, users in inputs_needed(methods, estimators).items():
        pairs.require(
            groups[need],
            f"the {need} that {users} need; leave those methods out (--methods) "
            f"or use a file that has them",
        )


def evaluate(
    samples: Iterable[Mapping],
    predictor: Predictor | None = None,
    methods: Sequence[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    dataset: str = "",
    network_threads: int | None = NETWORK_THREADS,
    estimators: Mapping[str, RobustEstimator] | None = None,
    batch_size: int = 1,
) -> EvalResult:
    """Evaluate ``methods`` on every sample (see the module docstring).

    Args:
        samples: a Dataset or any iterable of corrnet sample dictionaries (``xs``, ``labels``,
            ``R``, ``t``, ``ratios``, ``K1``, ``K2``, ``features``, ``index``).
        predictor: features (1, N, C) -> {"logits": (1, N), ...}, for example
            ``make_predictor(model)`` (:mod:`corrnet.models`); None evaluates the baselines only.
        methods: subset of :data:`METHODS` (default: all, or the baselines without predictor).
        workers: processes for the robust estimators (default: the cores available).
        dataset: name stored in the result.
        network_threads: torch threads while the network and the poses without RANSAC run
            (restored afterwards); None keeps the current setting.
        estimators: the estimator of each name (default :data:`ESTIMATORS`), for example
            ``{**ESTIMATORS, "poselib": PoseLibEstimator(max_epipolar_error=2.0)}``.
        batch_size: pairs per network call (:func:`run_network_batch`; padded with a mask
            where their N differ, so the predictor must take ``(features, mask)``); each
            pair's network time is the batch's divided by its size.  Every reported number
            equals the one-by-one run's up to float32 rounding of the logits.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive number, got {batch_size}")
    methods, needs_net = check_methods(methods, predictor, METHODS, NETWORK_METHODS, BASELINES)
    estimators = {**ESTIMATORS, **(estimators or {})}
    workers = default_workers() if workers is None else workers
    pairs: list[_Pair] = []
    results: list[PairResult] = []
    total = len(samples) if isinstance(samples, Sized) else None
    if total is not None and hasattr(samples, "__getitem__"):  # a Dataset: iterate by index
        samples = map(samples.__getitem__, range(total))
    with (
        torch_threads(network_threads),
        tqdm(
            total=total,
            desc="network" if needs_net else "reading",
            disable=not progress,
            unit="pair",
        ) as bar,
    ):
        for chunk in batched(samples, batch_size if needs_net else 1):
            new = [_read_pair(sample) for sample in chunk]
            if needs_net:
                rows, network_ms = run_network_batch(chunk, predictor)
                for pair, net in zip(new, rows):
                    pair.logits, pair.weights = net["logits"], net.get("weights")
                    pair.kept = kept_matches(pair.logits[None])[0].numpy()
                    pair.network_ms = network_ms
            for pair in new:
                for method in POSE_METHODS:
                    if method in methods:
                        R, t, selected, ms = _pose_without_ransac(pair, method)
                        results.append(
                            _result(pair, len(pairs), method, R, t, selected, pair.network_ms + ms)
                        )
                pairs.append(pair)
            bar.update(len(chunk))
    if not pairs:
        raise UserError("samples: no pairs to evaluate")
    jobs = [(i, p.xs, p.K1, p.K2, _tasks(p, methods, estimators)) for i, p in enumerate(pairs)]
    jobs = [job for job in jobs if job[-1]]
    for position, outcomes in run_pose_jobs(jobs, min(workers, len(jobs)), progress):
        pair = pairs[position]
        for method, R, t, mask, ms in outcomes:
            ms += pair.network_ms if method in NETWORK_METHODS else 0.0
            results.append(_result(pair, position, method, R, t, mask, ms))
    return EvalResult(dataset, methods, len(pairs), results)
