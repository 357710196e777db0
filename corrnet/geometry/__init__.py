"""Two-view geometry in torch: batched, float32 and float64, validated inputs."""

from .eight_point import WEIGHT_FLOOR, eight_point_rows, weighted_eight_point
from .epipolar import (
    INLIER_THRESHOLD,
    essential_from_pose,
    normalize_keypoints,
    pixel_sampson_distance,
    sampson_distance,
    skew,
    symmetric_epipolar_distance,
)
from .pose import pose_errors, recover_pose

__all__ = [
    "INLIER_THRESHOLD",
    "WEIGHT_FLOOR",
    "eight_point_rows",
    "essential_from_pose",
    "normalize_keypoints",
    "pixel_sampson_distance",
    "pose_errors",
    "recover_pose",
    "sampson_distance",
    "skew",
    "symmetric_epipolar_distance",
    "weighted_eight_point",
]
