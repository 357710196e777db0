"""Pictures of a 3-D registration: the two clouds before and after, and the kept matches.

The left view shows the source cloud (reddish purple) and the target cloud (blue) as the
scans give them, each in its own camera frame; the right view the source moved by the
estimated transform.  In both, the kept matches are lines from their source to their target
point, bluish green for an inlier (TP), vermilion for an outlier (FP), and the ground-truth
inliers the method dropped sky blue (FN).  Open3D renders off-screen in a worker process, as
for :func:`corrnet.visualization.render_pair`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from corrnet.atomic import temporary_folder

from .render import Rect, _run_worker, _text, _write_png_atomic, legend
from .scene import PALETTE, check_inputs, pair_stats

SOURCE_RGB = (0xCC, 0x79, 0xA7)  # Okabe–Ito reddish purple
TARGET_RGB = (0x00, 0x72, 0xB2)  # Okabe–Ito blue
RIGID_COLUMNS: tuple[str, ...] = ("x1", "y1", "z1", "x2", "y2", "z2")
"""Coordinates of a 3-D match (metres, each point in its own cloud's frame)."""
MAX_LINES = 300
"""Most lines drawn per outcome (a seeded subset), so that the clouds stay visible."""


def _drawn(chosen: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most MAX_LINES of the matches ``chosen`` (N,) bool, a seeded subset."""
    idx = np.flatnonzero(chosen)
    return np.sort(rng.choice(idx, MAX_LINES, replace=False)) if len(idx) > MAX_LINES else idx


def render_registration(
    out_png: str | Path,
    cloud1: np.ndarray,
    cloud2: np.ndarray,
    xs: np.ndarray,
    is_inlier_gt: np.ndarray,
    is_kept: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    *,
    title: str = "",
    errors: tuple[float, float] | None = None,
    size: tuple[int, int] = (1600, 700),
) -> Path:
    """Render one registration to a PNG of size (W, H) and return its path.

    cloud1 (M₁, 3), cloud2 (M₂, 3) metres; xs (N, 6) finite matches; is_inlier_gt, is_kept
    (N,) bool; R (3, 3), t (3,) the estimate that moves the source; errors (rotation degrees,
    translation metres) for the caption.  Raises ValueError for inputs of other shapes or
    types (:func:`~corrnet.visualization.scene.check_inputs`), RuntimeError when Open3D
    cannot render.
    """
    width, height = size
    xs, inlier, kept = check_inputs(xs, is_inlier_gt, is_kept, RIGID_COLUMNS)
    move = lambda p: np.asarray(p, np.float64) @ np.asarray(R).T + np.asarray(t).reshape(3)
    rng = np.random.default_rng(0)
    scene = {
        "target": np.asarray(cloud2, np.float64),
        "source_before": np.asarray(cloud1, np.float64),
        "source_after": move(cloud1),
        "source_rgb": np.array(SOURCE_RGB),
        "target_rgb": np.array(TARGET_RGB),
    }
    for name, chosen in (("tp", kept & inlier), ("fp", kept & ~inlier), ("fn", ~kept & inlier)):
        idx = _drawn(chosen, rng)  # the same matches in both views
        for view, src in (("before", xs[:, :3]), ("after", move(xs[:, :3]))):
            scene[f"lines_{name}_{view}"] = np.stack([src[idx], xs[idx, 3:]], 1)
    header, footer = max(56, round(0.1 * height)), max(32, round(0.06 * height))
    view_size = (width // 2, height - header - footer)
    with temporary_folder("corrnet-viz-") as tmp:
        scene_path, views_path = Path(tmp, "scene3d.npz"), Path(tmp, "views.npz")
        np.savez(scene_path, **scene)
        _run_worker(
            ["render3d", str(scene_path), str(views_path), "--size", *map(str, view_size)],
            capture=True,
        )
        with np.load(views_path) as data:
            views = {name: data[name] for name in ("before", "after")}
    canvas = np.full((height, width, 3), 255, np.uint8)
    canvas[header : header + view_size[1], : view_size[0]] = views["before"]
    canvas[header : header + view_size[1], view_size[0] : 2 * view_size[0]] = views["after"]
    font = max(0.6, min(width / 1600, height / 700))
    pad = round(14 * font)
    stats = pair_stats(inlier, kept)
    error = (
        ""
        if errors is None
        else f"   rotation error {errors[0]:.2f} deg   translation error {100 * errors[1]:.1f} cm"
    )
    _text(
        canvas,
        title or "registration",
        (pad, round(header * 0.42)),
        0.8 * font,
        max(1, round(2 * font)),
    )
    _text(
        canvas,
        f"N {stats.total}   kept {stats.kept}   TP {stats.tp}   FP {stats.fp}   "
        f"FN {stats.fn}{error}",
        (pad, round(header * 0.84)),
        0.6 * font,
        max(1, round(2 * font) - 1),
    )
    for x, label in (
        (0, "before: both scans in their own camera frames"),
        (view_size[0], "after: source moved by the estimate"),
    ):
        _text(canvas, label, (x + pad, header + round(26 * font)), 0.5 * font, 1, box=True)
    cv2.line(
        canvas,
        (view_size[0], header),
        (view_size[0], header + view_size[1] - 1),
        (200, 200, 200),
        1,
    )
    legend(
        canvas,
        Rect(0, height - footer, width, footer),
        [
            (SOURCE_RGB, "source cloud"),
            (TARGET_RGB, "target cloud"),
            (PALETTE["tp"], "TP kept inlier"),
            (PALETTE["fp"], "FP kept outlier"),
            (PALETTE["fn"], "FN missed inlier"),
        ],
        font,
        pad,
    )
    out = Path(out_png)
    _write_png_atomic(out, canvas)
    return out


def render_registration_pairs(
    folder: Path, dataset, result, k: int, method: str = "corrnet+ransac"
) -> list[Path]:
    """PNGs of the K worst and K best pairs of ``result`` (a RegEvalResult) by ``method``'s
    rotation error (else the first method's) into ``folder``; ``dataset`` a Pairs3D."""
    method = method if method in result.methods else result.methods[0]
    rows = sorted(result.of(method), key=lambda r: (not r.success, r.err_R))
    written = []
    for kind, chosen in (("worst", rows[::-1][:k]), ("best", rows[:k])):
        for rank, r in enumerate(chosen, 1):
            sample = dataset[r.position]
            cloud1, cloud2 = dataset.clouds(r.position)
            written.append(
                render_registration(
                    folder / f"{kind}-{rank:02d}-pair{r.index}.png",
                    cloud1,
                    cloud2,
                    sample["xs"].numpy(),
                    sample["labels"].numpy() > 0.5,
                    r.selected,
                    r.R,
                    r.t,
                    title=f"{method}, {dataset.name(r.position)} ({kind} {rank})",
                    errors=(r.err_R, r.err_t),
                )
            )
    return written
