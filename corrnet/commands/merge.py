"""Concatenate OANet-layout HDF5 files into one (e.g. a validation split of several collections).

    corrnet merge data/real-train/sceaux_castle.hdf5 data/real-train/kitchen.hdf5 \
        --out data/real-train/val-sceaux-kitchen.hdf5
(``python data/merge.py`` is the same command.)
The pairs keep their order (first file's pairs first); every pair is checked as
``OANetPairs`` reads it.  The output is written atomically and records its inputs and their pair
counts (attribute ``merged_from``).  An existing --out is replaced only with --overwrite; bad
input ends with one ``PROG: error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from corrnet.errors import check_output, run_command


def main(argv: Sequence[str] | None = None, prog: str = "corrnet merge") -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", type=Path, nargs="+", help="OANet-layout HDF5 files")
    parser.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)

    def run() -> None:
        from corrnet.datasets.oanet_hdf5 import merge_oanet_hdf5

        check_output(
            args.out, {f"input {i + 1}": p for i, p in enumerate(args.inputs)}, args.overwrite
        )
        count = merge_oanet_hdf5(args.inputs, args.out)
        print(f"{args.out}: {count} pairs")

    return run_command(prog, run)
