"""Dump synthetic two-view pairs in OANet's HDF5 layout.

    python data/synthetic.py --out data/generated/synthetic.hdf5 --pairs 1000 --seed 0 [--mode mixed]
See corrnet.datasets.synthetic for the generative model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from corrnet.datasets.synthetic import MODES, write_synthetic


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    parser.add_argument("--pairs", type=int, required=True, help="number of pairs")
    parser.add_argument("--seed", type=int, default=0, help="pair i is determined by (seed, i)")
    parser.add_argument("--mode", choices=MODES, default="mixed", help="scene type (default mixed)")
    parser.add_argument("--num-matches", type=int, default=2000, help="matches per pair (default 2000)")
    args = parser.parse_args(argv)
    count = write_synthetic(args.out, args.pairs, args.seed, args.mode, args.num_matches)
    print(f"{args.out}: {count} pairs")


if __name__ == "__main__":
    main()
