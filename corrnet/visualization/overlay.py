"""A quick 2-D picture of verified matches with OpenCV: the two images side by side, the kept
matches as lines, estimator inliers and rejected matches in two colour-blind-safe colours
(Okabe–Ito bluish green and vermilion, as the Open3D pictures), and a caption with the counts.

Without ground truth it shows what the estimator agrees with, not recall or missed inliers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from corrnet.atomic import atomic_path

from .scene import PALETTE

MAX_WIDTH = 1600
"""Widest picture in pixels (the Open3D picture's width); wider pairs are scaled down."""
CAPTION_HEIGHT = 28
"""Height of the caption band above the images, in pixels."""
DIM = 0.6
"""The images are blended to this share with mid-grey so that the lines stand out."""
INLIER_BGR = PALETTE["tp"][::-1]
REJECTED_BGR = PALETTE["fp"][::-1]


def _check(
    image1: np.ndarray,
    image2: np.ndarray,
    kpts1: np.ndarray,
    kpts2: np.ndarray,
    kept: np.ndarray,
    inliers: np.ndarray,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images as (h, w, 3) uint8, keypoints (N, 2) float64, masks (N,) bool; ValueError
    naming the argument otherwise."""
    images = []
    for name, img in (("image1", image1), ("image2", image2)):
        img = np.asarray(img)
        if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
            raise ValueError(
                f"{name}: expected a uint8 image (H, W) or (H, W, 3), got {img.dtype} {img.shape}"
            )
        images.append(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img)
    kpts1, kpts2 = np.asarray(kpts1, np.float64), np.asarray(kpts2, np.float64)
    if kpts1.ndim != 2 or kpts1.shape[1] != 2 or kpts2.shape != kpts1.shape:
        raise ValueError(
            f"kpts1, kpts2: expected two (N, 2) arrays of pixels, got {kpts1.shape} {kpts2.shape}"
        )
    masks = []
    for name, m in (("kept", kept), ("inliers", inliers)):
        m = np.asarray(m)
        if m.shape != (len(kpts1),) or m.dtype != bool:
            raise ValueError(f"{name}: expected ({len(kpts1)},) bool, got {m.dtype} {m.shape}")
        masks.append(m)
    return images, kpts1, kpts2, masks[0], masks[1]


def draw_matches(
    out_png: str | Path,
    image1: np.ndarray,
    image2: np.ndarray,
    kpts1: np.ndarray,
    kpts2: np.ndarray,
    kept: np.ndarray,
    inliers: np.ndarray,
    title: Sequence[str] = ("image 1", "image 2"),
) -> Path:
    """Write the picture of N matches to ``out_png`` (atomically) and return its path.

    image1, image2: (h, w, 3) BGR or (h, w) grey uint8; kpts1, kpts2 (N, 2) pixels
    (pixel-centre convention); kept (N,) bool, the matches drawn; inliers (N,) bool, the
    estimator's (bluish green; kept but rejected: vermilion).  Both images are scaled to a
    common height, the pair to at most :data:`MAX_WIDTH` pixels.  ``title``: the two names.
    """
    images, kpts1, kpts2, kept, inliers = _check(image1, image2, kpts1, kpts2, kept, inliers)
    height = max(img.shape[0] for img in images)
    scales = [height / img.shape[0] for img in images]
    widths = [round(img.shape[1] * s) for img, s in zip(images, scales)]
    shrink = min(1.0, MAX_WIDTH / sum(widths))
    height, widths = round(height * shrink), [max(1, round(w * shrink)) for w in widths]
    scales = [s * shrink for s in scales]
    canvas = np.full((CAPTION_HEIGHT + height, sum(widths), 3), 255, np.uint8)
    for img, x0, w in zip(images, (0, widths[0]), widths):
        if img.shape[:2] != (height, w):
            img = cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA)
        view = canvas[CAPTION_HEIGHT:, x0 : x0 + w]
        cv2.addWeighted(img, DIM, img, 0.0, (1 - DIM) * 128, dst=view)
    # pixel centres (u, v) map to (u + 0.5) * s - 0.5 in the scaled image
    p1 = (kpts1 + 0.5) * scales[0] - 0.5 + [0, CAPTION_HEIGHT]
    p2 = (kpts2 + 0.5) * scales[1] - 0.5 + [widths[0], CAPTION_HEIGHT]
    shift = 4  # sub-pixel line ends: coordinates in 1/16 px
    # the rejected matches on top: they are few and the ones to look at
    ends = np.round(np.concatenate([p1, p2], 1) * (1 << shift)).astype(np.int64)
    for mask, colour in ((kept & inliers, INLIER_BGR), (kept & ~inliers, REJECTED_BGR)):
        for x1, y1, x2, y2 in ends[mask].tolist():
            cv2.line(canvas, (x1, y1), (x2, y2), colour, 1, cv2.LINE_8, shift)  # AA: 100x slower
    caption = (
        f"{title[0]} - {title[1]}: {int(kept.sum())} kept, {int((kept & inliers).sum())} "
        f"inliers (green), {int((kept & ~inliers).sum())} rejected by the estimator (vermilion)"
    )
    cv2.putText(
        canvas,
        caption,
        (6, CAPTION_HEIGHT - 9),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    ok, png = cv2.imencode(".png", canvas, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError(f"{out_png}: OpenCV could not encode the picture as PNG")
    out = Path(out_png)
    with atomic_path(out) as tmp:
        tmp.write_bytes(png.tobytes())
    return out
