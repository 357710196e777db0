"""3-D point-cloud pairs with ground-truth rigid transforms and FPFH matches, in corrnet's
3-D HDF5 layout.

    corrnet prepare3d --rgbd DIR --out FILE.hdf5 [--min-overlap 0.3] [--num-matches 1000]
    corrnet prepare3d --synthetic --pairs K --out FILE.hdf5 [--seed S] [--num-matches 1000]
(``python data/prepare3d.py`` is the same command.)

--rgbd takes a sequence folder in the layout of ../shared/real-dev-3d (depth/, pose/,
camera-intrinsics.txt) or a folder of such sequences; every frame pair with overlap of at least
--min-overlap is kept.  --synthetic scans random rooms with two virtual depth cameras.  See
corrnet.datasets.pairs3d for the matching, the labels (10 cm at 5 cm voxels) and the layout.
An existing --out is replaced only with --overwrite; bad input ends with one
``PROG: error:`` line naming the file and exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from corrnet.arguments import fraction, seed
from corrnet.constants import MIN_OVERLAP, MIN_RIGID_MATCHES, NUM_MATCHES_3D
from corrnet.errors import UserError, check_output, run_command


def sequences(folder: Path) -> list[Path]:
    """``folder`` itself when it holds ``depth/``, else its sub-folders that do, sorted."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    if (folder / "depth").is_dir():
        return [folder]
    found = sorted(p for p in folder.iterdir() if (p / "depth").is_dir())
    if not found:
        raise FileNotFoundError(
            f"{folder}: no sequence (a folder with depth/, pose/ and camera-intrinsics.txt) in it"
        )
    return found


def main(argv: Sequence[str] | None = None, prog: str = "corrnet prepare3d") -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--rgbd", type=Path, help="RGB-D sequence folder, or a folder of them")
    src.add_argument("--synthetic", action="store_true", help="synthetic rooms (needs --pairs)")
    parser.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    parser.add_argument("--pairs", type=int, help="number of synthetic pairs")
    parser.add_argument(
        "--seed", type=seed, default=0, help="synthetic pair i is fixed by (seed, i)"
    )
    parser.add_argument(
        "--min-overlap",
        type=fraction,
        default=MIN_OVERLAP,
        help="RGB-D pairs with less overlap are left out (default %(default)s)",
    )
    parser.add_argument(
        "--num-matches",
        type=int,
        default=NUM_MATCHES_3D,
        help="source points matched per pair (default %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.synthetic and (args.pairs is None or args.pairs < 1):
        parser.error("--synthetic: expected --pairs K with K >= 1")
    if args.num_matches < MIN_RIGID_MATCHES:
        parser.error(
            f"--num-matches: expected at least {MIN_RIGID_MATCHES}, got {args.num_matches}"
        )
    if not 0.0 <= args.min_overlap <= 1.0:
        parser.error(f"--min-overlap: expected a fraction in [0, 1], got {args.min_overlap}")

    def run() -> None:
        import numpy as np

        from corrnet.datasets.pairs3d import write_pairs3d
        from corrnet.datasets.rgbd import rgbd_pairs
        from corrnet.datasets.synthetic3d import generate_pair3d

        check_output(args.out, {"--rgbd": args.rgbd}, args.overwrite)
        if args.synthetic:
            pairs = (generate_pair3d(args.seed, i, args.num_matches) for i in range(args.pairs))
            attrs = {"source": f"synthetic seed {args.seed}", "min_overlap": MIN_OVERLAP}
            total = args.pairs
        else:
            seqs = sequences(args.rgbd)
            pairs = (
                p
                for seq in seqs
                for p in rgbd_pairs(
                    seq, args.min_overlap, args.num_matches, progress=not args.quiet
                )
            )
            attrs = {"source": f"rgbd {args.rgbd.resolve()}", "min_overlap": args.min_overlap}
            total = None
        overlaps: list[float] = []

        def recorded():
            for pair in pairs:
                overlaps.append(pair["overlap"])
                yield pair

        count = write_pairs3d(args.out, recorded(), total, attrs, progress=not args.quiet)
        if count == 0:
            args.out.unlink()
            raise UserError(
                f"{args.rgbd}: no pair with overlap >= {args.min_overlap}; nothing written"
            )
        q = np.percentile(overlaps, [0, 10, 50, 90, 100])
        print(
            f"{args.out}: {count} pairs; overlap min / p10 / median / p90 / max "
            f"{' / '.join(f'{v:.2f}' for v in q)}"
        )

    return run_command(prog, run)
