"""Independent float64 numpy references for the data tests (no corrnet code)."""

from __future__ import annotations

import cv2
import numpy as np


def episym_np(xs: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """OANet's get_episym written out: squared distances to both epipolar lines.  (N, 4) -> (N,)."""
    xs = np.asarray(xs, np.float64)
    t = np.asarray(t, np.float64).reshape(3)
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    E = tx @ np.asarray(R, np.float64)
    x1 = np.c_[xs[:, :2], np.ones(len(xs))]
    x2 = np.c_[xs[:, 2:], np.ones(len(xs))]
    Fx1 = x1 @ E.T
    Ftx2 = x2 @ E
    x2Fx1 = (x2 * Fx1).sum(1)
    return x2Fx1**2 * (
        1 / (Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2) + 1 / (Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2)
    )


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle of R_aᵀ R_b in degrees."""
    c = (np.trace(np.asarray(R_a, np.float64).T @ np.asarray(R_b, np.float64)) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1, 1))))


def ransac_pose_error(xs: np.ndarray, R: np.ndarray, t: np.ndarray) -> float:
    """cv2.findEssentialMat + recoverPose on normalised matches; the pose error in degrees,
    max(rotation, translation)."""
    x1, x2 = (
        np.ascontiguousarray(xs[:, :2], np.float64),
        np.ascontiguousarray(xs[:, 2:], np.float64),
    )
    cv2.setRNGSeed(1234)
    E, _ = cv2.findEssentialMat(x1, x2, np.eye(3), cv2.RANSAC, 0.999, 1e-3)
    best = None
    for k in range(0, len(E), 3):
        n, R_est, t_est, _ = cv2.recoverPose(E[k : k + 3], x1, x2)
        if best is None or n > best[0]:
            best = (n, R_est, t_est[:, 0])
    _, R_est, t_est = best
    t = np.asarray(t, np.float64).reshape(3)
    cos_t = abs(t_est @ t) / (np.linalg.norm(t_est) * np.linalg.norm(t))
    return max(rotation_angle_deg(R, R_est), float(np.degrees(np.arccos(np.clip(cos_t, 0, 1)))))
