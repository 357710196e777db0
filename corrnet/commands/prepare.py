"""Putative matches (SIFT, or ORB / AKAZE with --detector) with GT labels from raw image
folders, in OANet's HDF5 layout.

    corrnet prepare --raw DIR --out data/generated/dev.hdf5 [--seq NAME ...]
    corrnet prepare --pairs-file pairs.json --out FILE.hdf5
    corrnet prepare --colmap MODEL_DIR --images IMAGE_DIR --out FILE.hdf5
    corrnet prepare --sfm --images IMAGE_DIR [--work DIR] --out FILE.hdf5
(``python data/prepare.py`` is the same command.)
See corrnet.datasets.prepare for the protocol, the JSON format and resuming, and
corrnet.datasets.colmap for COLMAP models, covisibility and the SfM of unposed folders.
An existing --out made from other inputs is refused unless --overwrite; bad input ends with one
``PROG: error:`` line naming the file (and pair) and exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from corrnet.arguments import add_detector, add_keypoint_count, count, fraction, seed
from corrnet.constants import NUM_FEATURES
from corrnet.errors import UserError, check_output, run_command

if TYPE_CHECKING:
    from corrnet.datasets.prepare import PairSpec


def colmap_specs(args: argparse.Namespace) -> tuple[list[PairSpec], dict[str, str | int | float]]:
    """Pairs and HDF5 attributes of ``--colmap`` / ``--sfm`` (``--sfm`` reconstructs first)."""
    try:
        from corrnet.datasets.colmap import (
            POSE_NOTE,
            colmap_pairs,
            parse_camera,
            read_model,
            reconstruct,
        )
    except ImportError as err:
        raise UserError(
            f"--colmap / --sfm need pycolmap ({err}): pip install 'corrnet[colmap]'"
        ) from None
    images = args.images
    prefix = images.parent.name if images.name == "images" else images.name
    model = args.colmap
    if args.sfm:
        work = args.work or args.out.with_name(args.out.name + ".sfm")
        camera = parse_camera(*args.camera) if args.camera else None
        model = reconstruct(images, work, args.matcher, args.camera_mode, args.threads, camera)
    rec = read_model(model)
    pairs = colmap_pairs(rec, images, prefix, args.min_overlap, args.max_pairs_per_image, args.seed)
    attrs = {
        "source": "colmap",
        "colmap_model": str(model.resolve()),
        "images": str(images.resolve()),
        "images_registered": rec.num_reg_images(),
        "min_overlap": args.min_overlap,
        "poses": POSE_NOTE if args.sfm else "COLMAP model given with --colmap",
    }
    if args.camera:
        attrs["camera"] = " ".join(args.camera)
    return pairs, attrs


def main(argv: Sequence[str] | None = None, prog: str = "corrnet prepare") -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--raw", type=Path, help="folder of sequences in OANet's raw layout")
    src.add_argument(
        "--pairs-file", type=Path, help="JSON list of pairs (image1, image2, K1, K2, R, t)"
    )
    src.add_argument(
        "--colmap",
        type=Path,
        metavar="MODEL_DIR",
        help="COLMAP sparse model (cameras, images, points3D as .bin or .txt); needs --images",
    )
    src.add_argument(
        "--sfm",
        action="store_true",
        help="reconstruct --images with pycolmap first (poses are pseudo-ground-truth)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    parser.add_argument("--seq", nargs="+", help="sequence names under --raw (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--max-pairs", type=int, help="sample at most this many pairs")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the pair sampling")
    add_keypoint_count(
        parser,
        help=f"keypoints per image (default {NUM_FEATURES}, OANet's protocol); recorded in "
        "the file's corrnet_protocol attribute",
    )
    add_detector(parser)
    parser.add_argument("--keep-cache", action="store_true", help="keep <out>.partial/ afterwards")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an --out made from other inputs"
    )
    colmap = parser.add_argument_group("COLMAP (--colmap, --sfm)")
    colmap.add_argument(
        "--images", type=Path, help="folder of the model's images (image names are relative to it)"
    )
    colmap.add_argument(
        "--min-overlap",
        type=fraction,
        default=0.1,
        help="keep pairs whose shared 3-D points are at least this share of the smaller "
        "image's 3-D points (0..1, default 0.1)",
    )
    colmap.add_argument(
        "--max-pairs-per-image",
        type=count,
        help="at most this many pairs per image, drawn at random among the covisible ones",
    )
    colmap.add_argument(
        "--work", type=Path, help="--sfm: work folder, reused by a rerun (default <out>.sfm/)"
    )
    colmap.add_argument(
        "--matcher",
        choices=("auto", "exhaustive", "sequential"),
        default="auto",
        help="--sfm: auto is exhaustive up to 60 images, else sequential (files in capture order)",
    )
    colmap.add_argument(
        "--camera-mode",
        choices=("auto", "single", "per-image"),
        default="auto",
        help="--sfm: auto is one shared camera per image size",
    )
    colmap.add_argument(
        "--camera",
        nargs=2,
        metavar=("MODEL", "PARAMS"),
        help="--sfm: known intrinsics, held fixed: a COLMAP model (PINHOLE, OPENCV, ...) and its "
        "comma-separated parameters in COLMAP's order and pixel convention (top-left pixel "
        "centre at 0.5), e.g. PINHOLE 520.9,521.0,325.6,250.2",
    )
    colmap.add_argument(
        "--threads", type=count, default=2, help="--sfm: COLMAP threads (default 2)"
    )
    args = parser.parse_args(argv)
    for name in ("workers", "max_pairs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive number, got {value}")
    if args.seq and args.raw is None:
        parser.error("--seq: only with --raw")
    if args.camera and not args.sfm:
        parser.error("--camera: only with --sfm")
    if (args.colmap is not None or args.sfm) and args.images is None:
        parser.error("--colmap and --sfm need --images IMAGE_DIR")

    def run() -> None:
        from corrnet.datasets.prepare import (
            find_sequences,
            prepare,
            read_pairs_file,
            read_sequence,
            select_pairs,
        )

        check_output(args.out, {"--pairs-file": args.pairs_file}, overwrite=None)
        attrs = None
        if args.colmap is not None or args.sfm:
            pairs, attrs = colmap_specs(args)
        elif args.raw is not None:
            pairs = [p for seq in find_sequences(args.raw, args.seq) for p in read_sequence(seq)]
        else:
            pairs = read_pairs_file(args.pairs_file)
        count = prepare(
            select_pairs(pairs, args.max_pairs, args.seed),
            args.out,
            args.workers,
            args.keep_cache,
            args.overwrite,
            attrs,
            args.num_features,
            args.detector,
        )
        print(f"{args.out}: {count} pairs")

    return run_command(prog, run)
