"""Number arguments of the command lines, checked once where argparse reads them: finite and
within a physical range, or ``prog: error: argument --x: expected ...`` and exit status 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from corrnet.constants import DEFAULT_DETECTOR, DETECTORS, MAX_MATCHES, MIN_MATCHES, NUM_FEATURES

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


def integer_in(low: int, high: int, what: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer in [low, high]; ArgumentTypeError naming ``what``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected {what + ' ' if what else ''}from {low} to {high}, got {value}"
            )
        return value

    return parse


MAX_SEED = 2**32 - 1
seed = integer_in(0, MAX_SEED, "a seed")
"""``type=`` of every ``--seed``: NumPy, OpenCV and PoseLib take seeds in [0, 2³² - 1]."""
count = integer_in(1, 10**9, "a count")
"""``type=`` of options that count pairs, repeats or batch entries (at least 1)."""
match_count = integer_in(MIN_MATCHES, MAX_MATCHES, "matches per pair")
"""``type=`` of ``corrnet bench --n``."""
pair_index = integer_in(0, 2**31 - 1, "a pair index")
"""``type=`` of ``corrnet viz --pair``."""
picture_side = integer_in(16, 8192, "pixels")
"""``type=`` of picture sizes (``corrnet viz --size W H``): a 8192 x 8192 RGB picture is 200 MB."""
MAX_SECONDS = 86400.0


def float_in(low: float, high: float, expected: str) -> Callable[[str], float]:
    """An argparse ``type``: a finite float in [low, high]; ArgumentTypeError saying
    ``expected``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


seconds = float_in(0.0, MAX_SECONDS, f"a number of seconds from 0 to {MAX_SECONDS:g}")
"""``type=`` of time budgets (``corrnet bench --target-s``, ``--budget-s``): finite, from 0
(as little as possible) to a day."""
fraction = float_in(0.0, 1.0, "a fraction in [0, 1]")
"""``type=`` of overlap options: a number in [0, 1]."""


def keypoint_count(text: str) -> int:
    """``type=`` of every ``--num-features``: keypoints per image, an integer of at least
    :data:`~corrnet.constants.MIN_MATCHES`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text}") from None
    if value < MIN_MATCHES:
        raise argparse.ArgumentTypeError(
            f"expected at least {MIN_MATCHES} keypoints per image, got {value}"
        )
    return value


def add_keypoint_count(
    parser: argparse.ArgumentParser,
    default: int | None = NUM_FEATURES,
    help: str = f"keypoints per image (default {NUM_FEATURES}, as the shipped weights were "
    "trained)",
) -> None:
    """``--num-features K`` (:func:`keypoint_count`), ``default`` (None: not given)."""
    parser.add_argument(
        "--num-features", type=keypoint_count, default=default, metavar="K", help=help
    )


def add_detector(
    parser: argparse.ArgumentParser, default: str | None = DEFAULT_DETECTOR, when: str = ""
) -> None:
    """``--detector {sift,orb,akaze}`` (:data:`~corrnet.constants.DETECTORS`), ``default``
    (None: not given, which means :data:`~corrnet.constants.DEFAULT_DETECTOR`); ``when``: the
    condition under which the option applies, for the help."""
    parser.add_argument(
        "--detector",
        choices=DETECTORS,
        default=default,
        help=f"OpenCV keypoints and descriptors{when and ' ' + when} (default {DEFAULT_DETECTOR}"
        ", as the shipped weights were trained); orb and akaze are matched by Hamming distance "
        "(docs/verifier.md, Other detectors)",
    )
