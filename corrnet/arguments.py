"""Number arguments of the command lines, checked once where argparse reads them: finite and
within a physical range, or ``prog: error: argument --x: expected ...`` and exit status 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_THRESHOLD_PX = 1e4
"""Largest inlier threshold in pixels (an image's diagonal is a few thousand pixels)."""


def positive_float(high: float, unit: str) -> Callable[[str], float]:
    """An argparse ``type``: a finite float in (0, high]; ArgumentTypeError naming ``unit``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= high):
            raise argparse.ArgumentTypeError(
                f"expected a positive number of {unit} up to {high:g}, got {text}"
            )
        return value

    return parse


pixel_threshold = positive_float(MAX_THRESHOLD_PX, "pixels")
"""``type=`` of the pixel-threshold options (``corrnet match --threshold``,
``eval.py --poselib-threshold``)."""
