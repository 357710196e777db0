"""Putative SIFT matches with GT labels from raw image folders, in OANet's HDF5 layout.

    python data/prepare.py --raw DIR --out data/generated/dev.hdf5 [--seq NAME ...]
    python data/prepare.py --pairs-file pairs.json --out FILE.hdf5
See corrnet.datasets.prepare for the protocol, the JSON format and resuming.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from corrnet.datasets.prepare import (find_sequences, prepare, read_pairs_file, read_sequence,
                                      select_pairs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--raw", type=Path, help="folder of sequences in OANet's raw layout")
    src.add_argument("--pairs-file", type=Path, help="JSON list of pairs (image1, image2, K1, K2, R, t)")
    parser.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    parser.add_argument("--seq", nargs="+", help="sequence names under --raw (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--max-pairs", type=int, help="sample at most this many pairs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pair sampling")
    parser.add_argument("--keep-cache", action="store_true", help="keep <out>.partial/ afterwards")
    args = parser.parse_args(argv)
    if args.raw is not None:
        pairs = [p for seq in find_sequences(args.raw, args.seq) for p in read_sequence(seq)]
    else:
        pairs = read_pairs_file(args.pairs_file)
    count = prepare(select_pairs(pairs, args.max_pairs, args.seed), args.out, args.workers, args.keep_cache)
    print(f"{args.out}: {count} pairs")


if __name__ == "__main__":
    main()
