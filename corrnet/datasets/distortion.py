"""Keypoint undistortion for cameras with OpenCV-style radial-tangential distortion.

Kept apart from the COLMAP reader so that worker processes undistorting keypoints import
OpenCV only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .sample import intrinsics

ITERATIONS = 100
"""Fixed-point iterations of the inversion (OpenCV's default of 5 is far from converged)."""


@dataclass(frozen=True)
class Undistorter:
    """Distorted keypoint pixels -> pixels of the pinhole camera (fx, fy, cx, cy).

    Distortion (k1, k2, p1, p2) of OpenCV's model, which COLMAP's SIMPLE_RADIAL (k1), RADIAL
    (k1, k2) and OPENCV models share, applied to normalised coordinates.  Pixel-centre
    convention (``cv2.KeyPoint.pt``).  Picklable; its repr names the camera in cache keys.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple[float, float, float, float]

    def __call__(self, uv: np.ndarray) -> np.ndarray:
        """(n, 2) pixels -> (n, 2) float64 undistorted pixels."""
        K = intrinsics(self.fx, self.fy, self.cx, self.cy)
        pts = np.asarray(uv, np.float64).reshape(-1, 1, 2)
        if not len(pts):
            return pts.reshape(0, 2)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, ITERATIONS, 1e-14)
        out = cv2.undistortPoints(
            pts, K, np.asarray(self.dist, np.float64), None, None, K, criteria
        )
        return out.reshape(-1, 2).astype(np.float64)
