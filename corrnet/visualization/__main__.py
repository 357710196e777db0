"""Command line: render (or show) one pair of an OANet-format HDF5 file.

    python -m corrnet.visualization --data FILE.hdf5 --pair I --out pic.png [--predictions preds.npz] [--show]

Without --predictions the kept set is the ground-truth inlier set.  A predictions .npz holds
``logits`` (N,) (kept = logits > 0) and optionally a scalar ``pose_error_deg``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corrnet.datasets import OANetPairs

from .render import render_pair, show_pair
from .scene import EMBEDDINGS


@dataclass(frozen=True)
class Pair:
    """One pair of an OANet HDF5 file: matches xs (N, 4), labels (N,) bool, intrinsics (3, 3)."""

    xs: np.ndarray
    is_inlier_gt: np.ndarray
    K1: np.ndarray
    K2: np.ndarray


def read_pair(path: Path, index: int) -> Pair:
    """Read pair `index` of an OANet-layout HDF5 file through :class:`corrnet.datasets.OANetPairs`.

    xs (N, 4) normalised matches; inliers are ys < :data:`corrnet.geometry.INLIER_THRESHOLD`;
    K1, K2 (3, 3) from f1s/f2s and the principal points (identity when the file has none).
    Raises KeyError for an index outside the file, BadPairError (a ValueError) for bad data.
    """
    pairs = OANetPairs(path)
    if not 0 <= index < len(pairs):
        raise KeyError(f"{path} has no pair {index} (it holds {len(pairs)} pairs)")
    sample = pairs[index]
    return Pair(xs=sample["xs"].double().numpy(), is_inlier_gt=sample["labels"].numpy().astype(bool),
                K1=sample["K1"].double().numpy(), K2=sample["K2"].double().numpy())


def kept_mask(args: argparse.Namespace, pair: Pair) -> tuple[np.ndarray, float | None]:
    """Kept set (N,) bool and pose error in degrees (or None) for the chosen prediction source.

    Sources: --predictions (``logits`` > 0), else ground truth.  A model checkpoint would be
    one more source here.
    """
    if args.predictions is None:
        return pair.is_inlier_gt.copy(), None
    with np.load(args.predictions) as preds:
        logits = np.asarray(preds["logits"], dtype=np.float64).reshape(-1)
        pose_error = float(preds["pose_error_deg"]) if "pose_error_deg" in preds else None
    if logits.shape != pair.is_inlier_gt.shape:
        raise ValueError(f"{args.predictions}: logits has {logits.size} entries, the pair has "
                         f"{pair.is_inlier_gt.size} matches")
    return logits > 0, pose_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m corrnet.visualization",
                                     description="Render one pair of an OANet HDF5 file with Open3D.")
    parser.add_argument("--data", type=Path, required=True, help="OANet-format .hdf5 file")
    parser.add_argument("--pair", type=int, required=True, help="pair index (dataset name)")
    parser.add_argument("--out", type=Path, help="output PNG")
    parser.add_argument("--predictions", type=Path, help=".npz with logits (N,) [and pose_error_deg]")
    parser.add_argument("--show", action="store_true", help="open an interactive window")
    parser.add_argument("--image1", type=Path, help="image 1, drawn as a textured plane")
    parser.add_argument("--image2", type=Path, help="image 2, drawn as a textured plane")
    parser.add_argument("--size", type=int, nargs=2, default=(1600, 700), metavar=("W", "H"))
    parser.add_argument("--embedding", choices=EMBEDDINGS, default="pca")
    parser.add_argument("--show-true-negatives", action="store_true", help="draw dropped outliers faintly")
    parser.add_argument("--title", help="caption title (default: file name and pair)")
    args = parser.parse_args(argv)
    if args.out is None and not args.show:
        parser.error("give --out PNG, --show, or both")
    if (args.image1 is None) != (args.image2 is None):
        parser.error("give both --image1 and --image2, or neither")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = parse_args(argv)
    try:
        pair = read_pair(args.data, args.pair)
        kept, pose_error = kept_mask(args, pair)
        title = args.title or f"{args.data.name}  pair {args.pair}"
        images = {} if args.image1 is None else {"image1": args.image1, "image2": args.image2,
                                                 "K1": pair.K1, "K2": pair.K2}
        common = dict(title=title, show_true_negatives=args.show_true_negatives, embedding=args.embedding,
                      **images)
        if args.out is not None:
            out = render_pair(args.out, pair.xs, pair.is_inlier_gt, kept, pose_error_deg=pose_error,
                              size=tuple(args.size), **common)
            print(out)
        if args.show:
            show_pair(pair.xs, pair.is_inlier_gt, kept, **common)
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
