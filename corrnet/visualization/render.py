"""Render one image pair to a PNG: Open3D views in a subprocess, caption and legend with OpenCV."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from corrnet.atomic import atomic_path, temporary_folder
from corrnet.errors import UserError

from .scene import OUTCOMES, PALETTE, PairStats, Scene, build_scene, check_inputs, pair_stats

APT_HINT = "apt-get install libvulkan1 mesa-vulkan-drivers libegl1 libgl1 libusb-1.0-0"
"""Debian/Ubuntu packages Open3D's off-screen renderer needs (Vulkan, CPU driver lavapipe)."""

WORKER_TIMEOUT_S = 600.0

_LEGEND = {
    "tp": "TP kept inlier",
    "fp": "FP kept outlier",
    "fn": "FN missed inlier",
    "tn": "TN dropped outlier",
}
_EMBED_LABEL = {
    "pca": "matches in 3-D: PCA of (x1, y1, x2, y2)",
    "epipolar": "matches in 3-D: (x1, Sampson residual up, y1)",
}
_INK = (40, 40, 40)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Rect:
    """Axis-aligned pixel rectangle: top-left (x, y), width w, height h."""

    x: int
    y: int
    w: int
    h: int

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The (h, w, ...) part of image covered by this rectangle."""
        return image[self.y : self.y + self.h, self.x : self.x + self.w]


@dataclass(frozen=True)
class Layout:
    """Where the header, the two views and the footer lie in a (W, H) picture."""

    size: tuple[int, int]
    header: Rect
    pair: Rect
    embed: Rect
    footer: Rect


def layout(size: tuple[int, int]) -> Layout:
    """Split a (W, H) picture: header band, pair view (64% wide) | embedding view, footer band."""
    width, height = size
    if width < 320 or height < 240:
        raise UserError(f"picture size must be at least 320 x 240, got {width} x {height}")
    header, footer = max(56, round(0.1 * height)), max(32, round(0.06 * height))
    body = height - header - footer
    pair_w = round(0.64 * width)
    return Layout(
        size=(width, height),
        header=Rect(0, 0, width, header),
        pair=Rect(0, header, pair_w, body),
        embed=Rect(pair_w, header, width - pair_w, body),
        footer=Rect(0, header + body, width, footer),
    )


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def caption(stats: PairStats, pose_error_deg: float | None) -> str:
    """One-line summary: counts, precision, recall and pose error."""
    pose = "n/a" if pose_error_deg is None else f"{pose_error_deg:.2f} deg"
    return (
        f"N {stats.total}   kept {stats.kept}   TP {stats.tp}   FP {stats.fp}   FN {stats.fn}"
        f"   precision {_percent(stats.precision)}   recall {_percent(stats.recall)}"
        f"   pose error {pose}"
    )


def _text(
    canvas: np.ndarray,
    text: str,
    origin: tuple[int, int],
    scale: float,
    thickness: int = 1,
    box: bool = False,
) -> None:
    """Draw text with its baseline-left at origin, shrunk to fit the canvas width, optionally
    over a white box."""
    room = canvas.shape[1] - origin[0] - 4
    width = cv2.getTextSize(text, _FONT, scale, thickness)[0][0]
    if width > room > 0:
        scale *= room / width
    if box:
        (w, h), base = cv2.getTextSize(text, _FONT, scale, thickness)
        pad = max(2, h // 4)
        cv2.rectangle(
            canvas,
            (origin[0] - pad, origin[1] - h - pad),
            (origin[0] + w + pad, origin[1] + base),
            (255, 255, 255),
            cv2.FILLED,
        )
    cv2.putText(canvas, text, origin, _FONT, scale, _INK, thickness, cv2.LINE_AA)


def compose(
    views: dict[str, np.ndarray],
    lay: Layout,
    stats: PairStats,
    *,
    title: str,
    pose_error_deg: float | None,
    embedding: str,
    show_true_negatives: bool,
) -> np.ndarray:
    """Place the rendered views (H, W, 3) RGB and draw caption and legend -> (H, W, 3) uint8 RGB."""
    width, height = lay.size
    canvas = np.full((height, width, 3), 255, np.uint8)
    lay.pair.crop(canvas)[:] = views["pair"]
    lay.embed.crop(canvas)[:] = views["embed"]
    font = max(0.6, min(width / 1600, height / 700))
    thick = max(1, round(2 * font))
    pad = round(14 * font)
    _text(canvas, title or "correspondences", (pad, round(lay.header.h * 0.42)), 0.8 * font, thick)
    _text(
        canvas,
        caption(stats, pose_error_deg),
        (pad, round(lay.header.h * 0.84)),
        0.6 * font,
        max(1, thick - 1),
    )
    shown = "kept + missed inliers" + (" + dropped outliers" if show_true_negatives else "")
    for rect, label in ((lay.pair, f"matches: {shown}"), (lay.embed, _EMBED_LABEL[embedding])):
        _text(canvas, label, (rect.x + pad, rect.y + round(26 * font)), 0.5 * font, 1, box=True)
    cv2.line(
        canvas,
        (lay.embed.x, lay.embed.y),
        (lay.embed.x, lay.embed.y + lay.embed.h - 1),
        (200, 200, 200),
        1,
    )
    cv2.line(canvas, (0, lay.footer.y), (width - 1, lay.footer.y), (200, 200, 200), 1)
    labels = {
        name: _LEGEND[name]
        + ("" if name != "tn" or show_true_negatives else " (hidden in matches)")
        for name in reversed(OUTCOMES)
    }
    legend(
        canvas, lay.footer, [(PALETTE[name], label) for name, label in labels.items()], font, pad
    )
    return canvas


def legend(
    canvas: np.ndarray,
    band: Rect,
    items: list[tuple[tuple[int, int, int], str]],
    font: float,
    pad: int,
) -> None:
    """Colour swatches and labels in one row, centred vertically in ``band``, shrunk to fit
    the canvas width."""
    needed = sum(
        cv2.getTextSize(label, _FONT, 0.5 * font, 1)[0][0] + 2.5 * pad + 14 * font
        for _, label in items
    )
    scale = font * min(1.0, (canvas.shape[1] - pad) / needed)
    swatch, gap = round(14 * scale), round(14 * scale)
    x, baseline = pad, band.y + (band.h + swatch) // 2
    for colour, label in items:
        cv2.rectangle(canvas, (x, baseline - swatch), (x + swatch, baseline), colour, cv2.FILLED)
        x += swatch + gap // 2
        _text(canvas, label, (x, baseline), 0.5 * scale)
        x += cv2.getTextSize(label, _FONT, 0.5 * scale, 1)[0][0] + 2 * gap


class RenderError(RuntimeError):
    """The picture cannot be made here (Open3D's worker failed, no display for a window, PNG
    encoding failed): the environment, neither the input nor a bug in the caller."""


def _worker_failure(what: str, output: str) -> RenderError:
    tail = "\n".join(_ANSI.sub("", output).strip().splitlines()[-12:])
    return RenderError(
        f"Open3D rendering failed: {what}. The usual cause is a missing or broken Vulkan driver; "
        f"on Debian/Ubuntu install one with:\n    {APT_HINT}\n"
        f"(off-screen rendering runs on the CPU through Mesa's lavapipe; no GPU or display "
        f"needed)\n"
        f"Worker output (last lines):\n{tail}"
    )


def _run_worker(args: list[str], *, capture: bool) -> None:
    """Run the Open3D worker process; raise RenderError if it fails or dies."""
    command = [sys.executable, "-m", "corrnet.visualization._worker", *args]
    try:
        done = subprocess.run(
            command, capture_output=capture, text=True, errors="replace", timeout=WORKER_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as err:
        output = err.stdout or ""
        raise _worker_failure(
            f"no result after {WORKER_TIMEOUT_S:.0f} s",
            output if isinstance(output, str) else output.decode(errors="replace"),
        ) from err
    if done.returncode != 0:
        code = done.returncode
        if code < 0:
            name = (
                signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            )
            what = f"worker killed by {name}"
        else:
            what = f"worker exited with status {code}"
        raise _worker_failure(what, (done.stdout or "") + (done.stderr or ""))


def _write_png_atomic(path: Path, rgb: np.ndarray) -> None:
    """Encode RGB (H, W, 3) as PNG into a temporary file beside path, then rename it onto path."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise RenderError(f"OpenCV could not encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def render_pair(
    out_png: str | Path,
    xs: np.ndarray,
    is_inlier_gt: np.ndarray,
    is_kept: np.ndarray,
    *,
    title: str = "",
    pose_error_deg: float | None = None,
    image1: str | Path | None = None,
    image2: str | Path | None = None,
    K1: np.ndarray | None = None,
    K2: np.ndarray | None = None,
    size: tuple[int, int] = (1600, 700),
    show_true_negatives: bool = False,
    embedding: str = "pca",
) -> Path:
    """Render one pair to a PNG of size (W, H) pixels, off-screen, and return its path.

    xs (N, 4) normalised matches [x1, y1, x2, y2]; is_inlier_gt, is_kept (N,) bool.
    Kept matches are drawn as lines coloured TP / FP, missed inliers as FN; true negatives
    only if show_true_negatives.  With image1/image2 and intrinsics K1/K2 (3, 3) the lines
    join pixels u = x fx + cx on the textured images.  embedding: "pca" or "epipolar".
    Raises RenderError (a RuntimeError) with an install hint when Open3D cannot render.
    """
    out = Path(out_png)
    xs, is_inlier_gt, is_kept = check_inputs(xs, is_inlier_gt, is_kept)
    lay = layout(size)
    scene = build_scene(
        xs,
        is_inlier_gt,
        is_kept,
        image1=image1,
        image2=image2,
        K1=K1,
        K2=K2,
        show_true_negatives=show_true_negatives,
        embedding=embedding,
    )
    with temporary_folder("corrnet-viz-") as tmp:
        scene_path, views_path = Path(tmp, "scene.npz"), Path(tmp, "views.npz")
        scene.save(scene_path)
        _run_worker(
            [
                "render",
                str(scene_path),
                str(views_path),
                "--pair-size",
                str(lay.pair.w),
                str(lay.pair.h),
                "--embed-size",
                str(lay.embed.w),
                str(lay.embed.h),
            ],
            capture=True,
        )
        with np.load(views_path) as data:
            views = {name: data[name] for name in ("pair", "embed")}
    picture = compose(
        views,
        lay,
        pair_stats(is_inlier_gt, is_kept),
        title=title,
        pose_error_deg=pose_error_deg,
        embedding=embedding,
        show_true_negatives=show_true_negatives,
    )
    _write_png_atomic(out, picture)
    return out


def has_display() -> bool:
    """Whether an interactive window can open (always assumed off Linux)."""
    return not sys.platform.startswith("linux") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def show_pair(
    xs: np.ndarray,
    is_inlier_gt: np.ndarray,
    is_kept: np.ndarray,
    *,
    title: str = "",
    image1: str | Path | None = None,
    image2: str | Path | None = None,
    K1: np.ndarray | None = None,
    K2: np.ndarray | None = None,
    show_true_negatives: bool = False,
    embedding: str = "pca",
) -> None:
    """Open an interactive Open3D window with both views (arguments as in :func:`render_pair`)."""
    if not has_display():
        raise RenderError(
            "--show needs a display but neither DISPLAY nor WAYLAND_DISPLAY is set; "
            "render a PNG with --out instead (or use X forwarding / a virtual display)"
        )
    scene: Scene = build_scene(
        xs,
        is_inlier_gt,
        is_kept,
        image1=image1,
        image2=image2,
        K1=K1,
        K2=K2,
        show_true_negatives=show_true_negatives,
        embedding=embedding,
    )
    with temporary_folder("corrnet-viz-") as tmp:
        scene_path = Path(tmp, "scene.npz")
        scene.save(scene_path)
        _run_worker(["show", str(scene_path), "--title", title or "corrnet"], capture=False)
