"""Concatenate OANet-layout HDF5 files into one (e.g. a validation split of several collections).

    python data/merge.py data/real-train/sceaux_castle.hdf5 data/real-train/kitchen.hdf5 \
        --out data/real-train/val-sceaux-kitchen.hdf5
The pairs keep their order (first file's pairs first); every pair is checked as
``OANetPairs`` reads it.  The output is written atomically and records its inputs and their pair
counts (attribute ``merged_from``).  An existing --out is replaced only with --overwrite; bad
input ends with one ``merge.py: error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corrnet.datasets.oanet_hdf5 import merge_oanet_hdf5
from corrnet.errors import check_output, run_command

PROG = "merge.py"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", type=Path, nargs="+", help="OANet-layout HDF5 files")
    parser.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)

    def run() -> None:
        check_output(
            args.out, {f"input {i + 1}": p for i, p in enumerate(args.inputs)}, args.overwrite
        )
        count = merge_oanet_hdf5(args.inputs, args.out)
        print(f"{args.out}: {count} pairs")

    return run_command(PROG, run)


if __name__ == "__main__":
    sys.exit(main())
