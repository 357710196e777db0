"""Time of ``corrnet match``'s picture: the 2-D OpenCV overlay against the Open3D picture.

    python benchmarks/bench_picture.py [--size 1024 768] [--repeats 5] [--no-3d]

One synthetic pair of ``--size`` images (colour noise at three scales, the second view a
homography of the first), matched once with ``corrnet.match_images`` (SIFT, the shipped
weights, PoseLib); then each picture of that result is written to a temporary folder
``--repeats`` times in this process, as ``corrnet match`` writes it
(:func:`corrnet.match.render_matches`, PNG included).  Prints one row per picture: the
median and the best wall time in ms, the median CPU time of this process in ms (the cost
on one core: the Open3D picture's own work runs in a subprocess and is not counted there;
the overlay runs in this process on one thread), and the PNG's size; the Open3D row is the baseline
(``n/a`` with the reason where it cannot render, e.g. without a Vulkan driver).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from corrnet.match import match_images, render_matches


def textured_pair(width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two (height, width, 3) uint8 views: colour noise, and its warp by a mild homography."""
    rng = np.random.default_rng(seed)
    layers = [
        cv2.GaussianBlur(rng.standard_normal((height, width, 3)), (0, 0), s) * s
        for s in (1.0, 3.0, 9.0)
    ]
    img = sum(layers)
    view1 = np.clip(128 + 60 * img / img.std(), 0, 255).astype(np.uint8)
    H = np.array([[0.97, 0.03, 0.02 * width], [-0.02, 0.99, 0.01 * height], [1e-5, 0.0, 1.0]])
    return view1, cv2.warpPerspective(view1, H, (width, height), borderMode=cv2.BORDER_REFLECT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(1024, 768), metavar=("W", "H"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-3d", dest="open3d", action="store_false")
    args = parser.parse_args()
    w, h = args.size
    f = 1.2 * max(w, h)
    K = (f, f, (w - 1) / 2, (h - 1) / 2)
    result = match_images(*textured_pair(w, h), K, K)
    print(
        f"pair {w}x{h}: {len(result.kpts1)} matches, {result.num_kept} kept, "
        f"{result.num_inliers} inliers; {args.repeats} runs per picture"
    )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'picture':16s} {'median ms':>10s} {'best ms':>10s} {'CPU ms':>8s} {'PNG KiB':>8s}")
    pictures = [("3d (Open3D)", "3d")] if args.open3d else []
    pictures.append(("2d (OpenCV)", "2d"))
    with tempfile.TemporaryDirectory(prefix="corrnet-bench-") as tmp:
        for label, picture in pictures:
            png = Path(tmp, f"{picture}.png")
            times, cpu = [], []
            try:
                for _ in range(args.repeats):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    render_matches(result, png, picture)
                    times.append((time.perf_counter() - start) * 1e3)
                    cpu.append((time.process_time() - start_cpu) * 1e3)
            except RuntimeError as err:
                print(f"{label:16s} {'n/a':>10s}  {str(err).splitlines()[0]}")
                continue
            print(
                f"{label:16s} {statistics.median(times):10.1f} {min(times):10.1f} "
                f"{statistics.median(cpu):8.1f} {png.stat().st_size / 1024:8.0f}"
            )


if __name__ == "__main__":
    main()
