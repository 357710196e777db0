"""Robust relative-pose estimation with OpenCV, as the OANet evaluation protocol runs it.

``cv2.findEssentialMat`` on normalised coordinates with an identity camera matrix (threshold
1e-3, prob 0.999, at most 1000 iterations), then ``cv2.recoverPose`` on every 3x3 essential
matrix it returns, keeping the one with the most matches in front of both cameras.  The
OpenCV random generator is seeded with :data:`SEED` before every call, so a pair gives the
same result whichever process evaluates it and in whatever order.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

THRESHOLD = 1e-3
"""Epipolar distance threshold of the robust estimators, in normalised coordinates."""
PROB = 0.999
MAX_ITERS = 1000
SEED = 1234
"""``cv2.setRNGSeed`` before every estimate (the reference numbers of real-dev use 1234)."""
MIN_MATCHES = 5
"""The five-point solver needs at least five matches; with fewer the estimate fails."""
ESTIMATORS = {"ransac": cv2.RANSAC, "magsac": cv2.USAC_MAGSAC}


def estimate_pose(x: np.ndarray, estimator: str = "ransac") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative pose of matches x (M, 4) normalised [x1, y1, x2, y2] by ``estimator``.

    Returns R (3, 3), unit t (3,) and the estimator's inlier mask (M,) bool.  R and t are NaN
    when the estimate failed (fewer than five matches or inliers, no model), which
    :func:`corrnet.geometry.pose_errors` counts as 180° / 90°.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {sorted(ESTIMATORS)}, got {estimator!r}")
    x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, 4)
    failed = (np.full((3, 3), np.nan), np.full(3, np.nan), np.zeros(len(x), bool))
    if len(x) < MIN_MATCHES:
        return failed
    p1, p2 = np.ascontiguousarray(x[:, :2]), np.ascontiguousarray(x[:, 2:])
    cv2.setRNGSeed(SEED)
    E, mask = cv2.findEssentialMat(p1, p2, np.eye(3), method=ESTIMATORS[estimator], prob=PROB,
                                   threshold=THRESHOLD, maxIters=MAX_ITERS)
    if E is None or mask is None or E.shape[0] < 3 or E.shape[0] % 3:
        return failed
    inliers = mask.reshape(-1).astype(bool)
    if inliers.sum() < MIN_MATCHES:
        return failed[0], failed[1], inliers
    best = (-1, failed[0], failed[1])
    for E_i in np.split(E, E.shape[0] // 3):
        count, R, t, _ = cv2.recoverPose(E_i, p1[inliers], p2[inliers], np.eye(3))
        if count > best[0]:
            best = (count, R, t.reshape(3))
    return best[1], best[2], inliers


PoseTask = tuple[str, str, np.ndarray]
"""(method name, estimator name, indices (M,) int of the matches the estimator sees)."""
PoseJob = tuple[int, np.ndarray, list[PoseTask]]
"""(pair position, matches (N, 4) float64, tasks): the robust estimates of one pair."""
PoseOutcome = tuple[str, np.ndarray, np.ndarray, np.ndarray, float]
"""(method, R (3, 3), t (3,), inlier mask over all N matches (N,) bool, estimator ms)."""


def init_worker() -> None:
    """Pool initializer: one OpenCV thread per worker process (the pool is the parallelism)."""
    cv2.setNumThreads(1)


def run_job(job: PoseJob) -> tuple[int, list[PoseOutcome]]:
    """Run every task of a pair, each timed on its own (wall clock, ms, in this process)."""
    position, x, tasks = job
    outcomes = []
    for method, estimator, indices in tasks:
        start = time.perf_counter()
        R, t, inliers = estimate_pose(x[indices], estimator)
        ms = (time.perf_counter() - start) * 1e3
        mask = np.zeros(len(x), bool)
        mask[indices[inliers]] = True
        outcomes.append((method, R, t, mask, ms))
    return position, outcomes
