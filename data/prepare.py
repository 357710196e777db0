"""Putative SIFT matches with GT labels from raw image folders, in OANet's HDF5 layout.

    python data/prepare.py --raw DIR --out data/generated/dev.hdf5 [--seq NAME ...]
    python data/prepare.py --pairs-file pairs.json --out FILE.hdf5
See corrnet.datasets.prepare for the protocol, the JSON format and resuming.  An existing
--out made from other inputs is refused unless --overwrite; bad input ends with one
``prepare.py: error:`` line naming the file (and pair) and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corrnet.datasets.prepare import (find_sequences, prepare, read_pairs_file, read_sequence,
                                      select_pairs)
from corrnet.errors import check_output, run_command

PROG = "prepare.py"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--raw", type=Path, help="folder of sequences in OANet's raw layout")
    src.add_argument("--pairs-file", type=Path, help="JSON list of pairs (image1, image2, K1, K2, R, t)")
    parser.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    parser.add_argument("--seq", nargs="+", help="sequence names under --raw (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--max-pairs", type=int, help="sample at most this many pairs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pair sampling")
    parser.add_argument("--keep-cache", action="store_true", help="keep <out>.partial/ afterwards")
    parser.add_argument("--overwrite", action="store_true", help="replace an --out made from other inputs")
    args = parser.parse_args(argv)
    for name in ("workers", "max_pairs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive number, got {value}")
    if args.seq and args.raw is None:
        parser.error("--seq: only with --raw")

    def run() -> None:
        check_output(args.out, {"--pairs-file": args.pairs_file}, overwrite=None)
        if args.raw is not None:
            pairs = [p for seq in find_sequences(args.raw, args.seq) for p in read_sequence(seq)]
        else:
            pairs = read_pairs_file(args.pairs_file)
        count = prepare(select_pairs(pairs, args.max_pairs, args.seed), args.out, args.workers,
                        args.keep_cache, args.overwrite)
        print(f"{args.out}: {count} pairs")

    return run_command(parser.prog, run)


if __name__ == "__main__":
    sys.exit(main())
