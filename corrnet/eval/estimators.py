"""Robust relative-pose estimators behind one interface, and the worker jobs that run them.

An estimator (:class:`RobustEstimator`) has a ``name``, ``needs_intrinsics`` (whether it works
in pixels) and ``estimate(x, K1, K2) -> (R, t, inliers)`` for matches x (M, 4) in normalised
coordinates; :data:`ESTIMATORS` maps every name to an instance.  Adding one (say GC-RANSAC) is
one class and one entry here, and its name in :data:`corrnet.constants.ESTIMATOR_NAMES` (the
command line's choices); the evaluation then offers it on every subset of matches
(``<subset>+<name>``).

* ``ransac`` / ``magsac`` (:class:`OpenCVEstimator`), OANet's protocol: ``cv2.findEssentialMat``
  on normalised coordinates with an identity camera matrix (threshold :data:`THRESHOLD` = 1e-3
  normalised, prob 0.999, at most 1000 iterations), then ``cv2.recoverPose`` on every 3x3
  essential matrix it returns, keeping the one with the most matches in front of both
  cameras.  The OpenCV generator is seeded (default :data:`SEED`) before every call, so a pair
  gives the same result whichever process evaluates it and in whatever order.
* ``poselib`` (:class:`PoseLibEstimator`): PoseLib's LO-RANSAC ``estimate_relative_pose``
  (five-point solver, local optimisation, final robust refinement) on *pixel* coordinates
  with each image's PINHOLE camera from K; threshold ``max_epipolar_error`` in pixels
  (:data:`POSELIB_THRESHOLD` = 1 px), PoseLib's other defaults, its RANSAC seed fixed
  (default :data:`SEED`).  PoseLib's CameraPose maps X₂ = R X₁ + t, corrnet's convention.

Every estimator returns NaN R and t when it fails (too few matches, no model), which
:func:`corrnet.geometry.pose_errors` counts as 180° / 90°; it never raises on such a pair.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Protocol

import cv2
import numpy as np
import poselib

from corrnet.constants import POSELIB_THRESHOLD, SEED
from corrnet.errors import UserError

from ..datasets.sample import to_pixels

THRESHOLD = 1e-3
"""Epipolar distance threshold of the OpenCV estimators, in normalised coordinates."""
PROB = 0.999
MAX_ITERS = 1000
MIN_MATCHES = 5
"""The five-point solver needs at least five matches; with fewer the estimate fails."""
OPENCV_METHODS = {"ransac": cv2.RANSAC, "magsac": cv2.USAC_MAGSAC}
"""``cv2.findEssentialMat`` method flag of each OpenCV estimator."""

Pose = tuple[np.ndarray, np.ndarray, np.ndarray]
"""R (3, 3), unit t (3,), inlier mask (M,) bool; R and t NaN when the estimate failed."""


class RobustEstimator(Protocol):
    """A robust relative-pose estimator (picklable: it travels to worker processes)."""

    name: str
    needs_intrinsics: bool
    """Whether it works in pixels (K1, K2 must be the true intrinsics, not the identity)."""

    def estimate(
        self, x: np.ndarray, K1: np.ndarray | None = None, K2: np.ndarray | None = None
    ) -> Pose:
        """Pose of matches x (M, 4) normalised [x1, y1, x2, y2]; K1, K2 (3, 3) pixel intrinsics."""
        ...


def failed(m: int) -> Pose:
    """The result of a failed estimate on m matches: NaN R (3, 3), t (3,), no inliers."""
    return np.full((3, 3), np.nan), np.full(3, np.nan), np.zeros(m, bool)


@dataclass(frozen=True)
class OpenCVEstimator:
    """``cv2.findEssentialMat`` + ``cv2.recoverPose`` with OANet's settings (module docstring)."""

    name: str
    threshold: float = THRESHOLD
    seed: int = SEED
    needs_intrinsics: ClassVar[bool] = False

    def estimate(
        self, x: np.ndarray, K1: np.ndarray | None = None, K2: np.ndarray | None = None
    ) -> Pose:
        """Pose of x (M, 4) normalised; K1, K2 are not needed (the threshold is normalised)."""
        x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, 4)
        if len(x) < MIN_MATCHES:
            return failed(len(x))
        p1, p2 = np.ascontiguousarray(x[:, :2]), np.ascontiguousarray(x[:, 2:])
        cv2.setRNGSeed(self.seed)
        try:
            E, mask = cv2.findEssentialMat(
                p1,
                p2,
                np.eye(3),
                method=OPENCV_METHODS[self.name],
                prob=PROB,
                threshold=self.threshold,
                maxIters=MAX_ITERS,
            )
        except cv2.error:  # a degenerate minimal sample can trip an assertion in its solver
            return failed(len(x))
        if E is None or mask is None or E.shape[0] < 3 or E.shape[0] % 3:
            return failed(len(x))
        inliers = mask.reshape(-1).astype(bool)
        if inliers.sum() < MIN_MATCHES:
            return (*failed(len(x))[:2], inliers)
        best = (-1, *failed(len(x))[:2])
        for E_i in np.split(E, E.shape[0] // 3):
            count, R, t, _ = cv2.recoverPose(E_i, p1[inliers], p2[inliers], np.eye(3))
            if count > best[0]:
                best = (count, R, t.reshape(3))
        return best[1], best[2], inliers


def pinhole(K: np.ndarray) -> poselib.Camera:
    """PoseLib PINHOLE camera [fx, fy, cx, cy] of pixel intrinsics K (3, 3) without skew."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    return poselib.Camera("PINHOLE", [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], 0, 0)


@dataclass(frozen=True)
class PoseLibEstimator:
    """PoseLib's LO-RANSAC relative pose on pixels (module docstring)."""

    name: str = "poselib"
    max_epipolar_error: float = POSELIB_THRESHOLD
    """Sampson error threshold in pixels."""
    seed: int = SEED
    progressive: bool = False
    """PROSAC: draw the minimal samples from the first matches first (give them best first)."""
    needs_intrinsics: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not self.max_epipolar_error > 0:
            raise UserError(
                f"max_epipolar_error: expected a positive number of pixels, "
                f"got {self.max_epipolar_error}"
            )

    def estimate(
        self, x: np.ndarray, K1: np.ndarray | None = None, K2: np.ndarray | None = None
    ) -> Pose:
        """Pose of x (M, 4) normalised, in the pixels of K1, K2 (3, 3), which are required."""
        if K1 is None or K2 is None:
            raise UserError(
                "poselib: expected the pixel intrinsics K1 and K2 (its threshold "
                "is in pixels), got None"
            )
        x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, 4)
        if len(x) < MIN_MATCHES:
            return failed(len(x))
        pose, info = poselib.estimate_relative_pose(
            to_pixels(x[:, :2], K1),
            to_pixels(x[:, 2:], K2),
            pinhole(K1),
            pinhole(K2),
            {
                "max_epipolar_error": self.max_epipolar_error,
                "seed": self.seed,
                "progressive_sampling": self.progressive,
            },
            {},
        )
        inliers = np.asarray(info["inliers"], bool).reshape(-1)
        t = np.asarray(pose.t, np.float64)
        if info["num_inliers"] < MIN_MATCHES or not np.linalg.norm(t) > 0:
            return (*failed(len(x))[:2], inliers)
        return np.asarray(pose.R, np.float64), t / np.linalg.norm(t), inliers


def check_seed(seed: int) -> int:
    """``seed`` if both samplers take it (an integer in [0, 2^31)), else ValueError."""
    if not 0 <= seed < 2**31:
        raise UserError(f"seed: expected an integer in [0, 2^31), got {seed}")
    return seed


def make_estimators(
    seed: int = SEED, poselib_threshold: float = POSELIB_THRESHOLD
) -> dict[str, RobustEstimator]:
    """Every robust estimator by name (:data:`corrnet.constants.ESTIMATOR_NAMES`), each seeded
    with ``seed`` (PoseLib's threshold in px)."""
    check_seed(seed)
    return {
        "ransac": OpenCVEstimator("ransac", seed=seed),
        "magsac": OpenCVEstimator("magsac", seed=seed),
        "poselib": PoseLibEstimator(max_epipolar_error=poselib_threshold, seed=seed),
    }


ESTIMATORS: dict[str, RobustEstimator] = make_estimators()
"""Every robust estimator by name, with the default seed and threshold."""


def estimate_pose(
    x: np.ndarray,
    estimator: str = "ransac",
    K1: np.ndarray | None = None,
    K2: np.ndarray | None = None,
) -> Pose:
    """Relative pose of matches x (M, 4) normalised by the estimator named ``estimator``.

    K1, K2 (3, 3): pixel intrinsics, needed by ``poselib``.  Returns R (3, 3), unit t (3,)
    and the inlier mask (M,) bool; R and t are NaN when the estimate failed.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {sorted(ESTIMATORS)}, got {estimator!r}")
    return ESTIMATORS[estimator].estimate(x, K1, K2)


PoseTask = tuple[str, RobustEstimator, np.ndarray]
"""(method name, estimator, indices (M,) int of the matches it sees)."""
PoseJob = tuple[int, np.ndarray, np.ndarray, np.ndarray, list[PoseTask]]
"""(pair position, matches (N, 4) float64, K1, K2 (3, 3), tasks): the estimates of one pair."""
PoseOutcome = tuple[str, np.ndarray, np.ndarray, np.ndarray, float]
"""(method, R (3, 3), t (3,), inlier mask over all N matches (N,) bool, estimator ms)."""


def init_worker() -> None:
    """Pool initializer: one OpenCV thread per worker process (the pool is the parallelism)."""
    cv2.setNumThreads(1)


def run_job(job: PoseJob) -> tuple[int, list[PoseOutcome]]:
    """Run every task of a pair, each timed on its own (wall clock, ms, in this process)."""
    position, x, K1, K2, tasks = job
    outcomes = []
    for method, estimator, indices in tasks:
        start = time.perf_counter()
        R, t, inliers = estimator.estimate(x[indices], K1, K2)
        ms = (time.perf_counter() - start) * 1e3
        mask = np.zeros(len(x), bool)
        mask[indices[inliers]] = True
        outcomes.append((method, R, t, mask, ms))
    return position, outcomes
