"""``corrnet colmap --database DB ...`` (also ``python -m corrnet.colmap_db``): verify the
matches of a COLMAP database with corrnet and write its two-view geometries
(:mod:`corrnet.colmap_db`, which is imported after the options are parsed)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from corrnet.arguments import pixel_threshold
from corrnet.errors import run_command
from corrnet.match import _Parser


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = _Parser(prog=prog, description="Verify a COLMAP database's matches with corrnet.")
    parser.add_argument("--database", type=Path, required=True, help="COLMAP database (.db)")
    parser.add_argument("--image_path", type=Path, help="image folder (needed by --from-images)")
    parser.add_argument("--pairs", type=Path, help="verify only these pairs (NAME1 NAME2 lines)")
    parser.add_argument("--output", type=Path, help="write a verified copy here, not into DB")
    parser.add_argument(
        "--from-images", action="store_true", help="create DB with corrnet's SIFT + NN matches"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--checkpoint", type=Path, help="corrnet weights (default: shipped)")
    parser.add_argument("--device", default="cpu", help="torch device of the network (cpu)")
    parser.add_argument(
        "--threshold", type=pixel_threshold, metavar="PX", help="PoseLib threshold (1 px)"
    )
    parser.add_argument(
        "--inlier-threshold",
        type=pixel_threshold,
        metavar="PX",
        help="write as inliers every raw match within PX of the pose (COLMAP's two-view "
        "max_error, 4 px)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per forward pass (16)")
    parser.add_argument("--workers", type=int, default=1, help="processes for PoseLib and SIFT")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for name in ("batch_size", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive number")
    return args


def main(argv: Sequence[str] | None = None, prog: str = "corrnet colmap") -> int:
    """Entry point; returns the exit status (0, or 2 for bad input)."""
    args = parse_args(argv, prog)

    def run() -> int:
        from corrnet.colmap_db import COLMAP_MAX_ERROR, run_database

        start = time.perf_counter()
        max_error = COLMAP_MAX_ERROR if args.inlier_threshold is None else args.inlier_threshold
        path, pairs, posed, resumed = run_database(
            args.database,
            args.image_path,
            args.pairs,
            args.output,
            args.from_images,
            args.overwrite,
            args.checkpoint,
            args.device,
            args.threshold,
            args.batch_size,
            args.workers,
            not args.quiet,
            max_error,
        )
        earlier = f", {resumed} of them by an earlier run" if resumed else ""
        print(
            f"{pairs} pairs verified{earlier} ({posed} with a pose, two-view geometry "
            f"CALIBRATED) in {time.perf_counter() - start:.1f} s; {path}"
        )
        return 0

    return run_command(prog, run)
