"""Dump synthetic two-view pairs in OANet's HDF5 layout.

    corrnet synthetic --out data/generated/synthetic.hdf5 --pairs 1000 --seed 0 [--mode mixed]
(``python data/synthetic.py`` is the same command.)
See corrnet.datasets.synthetic for the generative model.  An existing --out is replaced only
with --overwrite; bad arguments end with one ``PROG: error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from corrnet.arguments import seed
from corrnet.constants import MAX_MATCHES, MIN_MATCHES, MODES
from corrnet.errors import check_output, run_command


def main(argv: Sequence[str] | None = None, prog: str = "corrnet synthetic") -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    parser.add_argument("--pairs", type=int, required=True, help="number of pairs (at least 1)")
    parser.add_argument("--seed", type=seed, default=0, help="pair i is determined by (seed, i)")
    parser.add_argument("--mode", choices=MODES, default="mixed", help="scene type (default mixed)")
    parser.add_argument(
        "--num-matches", type=int, default=2000, help="matches per pair (default 2000)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error(f"--pairs: expected at least 1, got {args.pairs}")
    if not MIN_MATCHES <= args.num_matches <= MAX_MATCHES:
        parser.error(
            f"--num-matches: expected {MIN_MATCHES} to {MAX_MATCHES}, got {args.num_matches}"
        )

    def run() -> None:
        from corrnet.datasets.synthetic import write_synthetic

        check_output(args.out, {}, args.overwrite)
        count = write_synthetic(args.out, args.pairs, args.seed, args.mode, args.num_matches)
        print(f"{args.out}: {count} pairs")

    return run_command(prog, run)
