"""Render (or show) one pair of an OANet-format HDF5 file.

    corrnet viz --data FILE.hdf5 --pair I --out pic.png [--predictions preds.npz] [--show]
(``python -m corrnet.visualization`` is the same command.)

Without --predictions the kept set is the ground-truth inlier set.  A predictions .npz holds
``logits`` (N,) (kept = logits > 0) and optionally a scalar ``pose_error_deg``.  An existing
--out is replaced only with --overwrite, and never when it is one of the inputs; bad input,
and a picture that cannot be rendered here (:class:`~corrnet.visualization.render.RenderError`:
no Vulkan driver, no display for --show), end with one ``PROG: error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corrnet.arguments import pair_index, picture_side
from corrnet.constants import EMBEDDINGS
from corrnet.errors import USER_ERRORS, UserError, check_output, run_command


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
    from corrnet.datasets import OANetPairs

    pairs = OANetPairs(path)
    if not 0 <= index < len(pairs):
        raise UserError(f"{path} has no pair {index} (it holds {len(pairs)} pairs)")
    sample = pairs[index]
    return Pair(
        xs=sample["xs"].double().numpy(),
        is_inlier_gt=sample["labels"].numpy().astype(bool),
        K1=sample["K1"].double().numpy(),
        K2=sample["K2"].double().numpy(),
    )


def kept_mask(args: argparse.Namespace, pair: Pair) -> tuple[np.ndarray, float | None]:
    """Kept set (N,) bool and pose error in degrees (or None) for the chosen prediction source.

    Sources: --predictions (``logits`` > 0), else ground truth.  A model checkpoint would be
    one more source here.
    """
    if args.predictions is None:
        return pair.is_inlier_gt.copy(), None
    logits, pose_error = read_predictions(args.predictions)
    if logits.shape != pair.is_inlier_gt.shape:
        raise UserError(
            f"{args.predictions}: logits has {logits.size} entries, the pair has "
            f"{pair.is_inlier_gt.size} matches"
        )
    return logits > 0, pose_error


def read_predictions(path: Path) -> tuple[np.ndarray, float | None]:
    """``logits`` (N,) float64 and the scalar ``pose_error_deg`` (or None) of a predictions .npz.

    Raises ValueError naming the file and the key for anything else.
    """
    expected = "expected an .npz with logits (N,) and optionally a scalar pose_error_deg"
    try:
        preds = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: predictions file not found") from None
    except (OSError, ValueError, EOFError):
        raise UserError(f"{path}: not an .npz file; {expected}") from None
    if not isinstance(preds, np.lib.npyio.NpzFile):
        raise UserError(f"{path}: a single .npy array, not an .npz; {expected}")
    with preds:
        if "logits" not in preds:
            raise UserError(
                f"{path}: missing key 'logits' (found {sorted(preds.files)}); {expected}"
            )
        logits, error = (
            preds["logits"],
            preds["pose_error_deg"] if "pose_error_deg" in preds else None,
        )
    if (
        logits.ndim != 1
        or not np.issubdtype(logits.dtype, np.number)
        or not np.isfinite(logits).all()
    ):
        raise UserError(
            f"{path}: logits: expected finite numbers of shape (N,), "
            f"got {logits.dtype} {logits.shape}"
        )
    if error is not None and (error.size != 1 or not np.issubdtype(error.dtype, np.number)):
        raise UserError(
            f"{path}: pose_error_deg: expected one number, got {error.dtype} {error.shape}"
        )
    return logits.astype(np.float64), None if error is None else float(error.reshape(()))


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Render one pair of an OANet HDF5 file with Open3D.",
    )
    parser.add_argument("--data", type=Path, required=True, help="OANet-format .hdf5 file")
    parser.add_argument("--pair", type=pair_index, required=True, help="pair index (dataset name)")
    parser.add_argument("--out", type=Path, help="output PNG")
    parser.add_argument(
        "--predictions", type=Path, help=".npz with logits (N,) [and pose_error_deg]"
    )
    parser.add_argument("--show", action="store_true", help="open an interactive window")
    parser.add_argument("--image1", type=Path, help="image 1, drawn as a textured plane")
    parser.add_argument("--image2", type=Path, help="image 2, drawn as a textured plane")
    parser.add_argument(
        "--size", type=picture_side, nargs=2, default=(1600, 700), metavar=("W", "H")
    )
    parser.add_argument("--embedding", choices=EMBEDDINGS, default="pca")
    parser.add_argument(
        "--show-true-negatives", action="store_true", help="draw dropped outliers faintly"
    )
    parser.add_argument("--title", help="caption title (default: file name and pair)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    if args.out is None and not args.show:
        parser.error("give --out PNG, --show, or both")
    if (args.image1 is None) != (args.image2 is None):
        parser.error("give both --image1 and --image2, or neither")
    return args


def main(argv: Sequence[str] | None = None, prog: str = "corrnet viz") -> int:
    """Entry point; returns the process exit status (2 for bad input)."""
    args = parse_args(argv, prog)

    def run() -> None:
        from corrnet.visualization import render_pair, show_pair

        if args.out is not None:
            check_output(
                args.out,
                {
                    "--data": args.data,
                    "--predictions": args.predictions,
                    "--image1": args.image1,
                    "--image2": args.image2,
                },
                args.overwrite,
            )
        pair = read_pair(args.data, args.pair)
        kept, pose_error = kept_mask(args, pair)
        title = args.title or f"{args.data.name}  pair {args.pair}"
        images = (
            {}
            if args.image1 is None
            else {"image1": args.image1, "image2": args.image2, "K1": pair.K1, "K2": pair.K2}
        )
        common = dict(
            title=title,
            show_true_negatives=args.show_true_negatives,
            embedding=args.embedding,
            **images,
        )
        if args.out is not None:
            out = render_pair(
                args.out,
                pair.xs,
                pair.is_inlier_gt,
                kept,
                pose_error_deg=pose_error,
                size=tuple(args.size),
                **common,
            )
            print(out)
        if args.show:
            show_pair(pair.xs, pair.is_inlier_gt, kept, **common)

    from corrnet.visualization.render import RenderError

    return run_command(prog, run, USER_ERRORS + (RenderError,))
