"""Synthetic pair generation speed: pairs per second, single process and DataLoader workers.

    python benchmarks/bench_synthetic.py [--pairs 200] [--num-matches 2000] [--workers 2]
The single-process figure is the best of ``--repeats`` runs (robust to a shared machine),
with one torch thread as in a DataLoader worker (the per-pair tensors are too small for more).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from corrnet.datasets import PairCollator
from corrnet.datasets.synthetic import MODES, SyntheticPairs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--num-matches", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for mode in MODES:
        data = SyntheticPairs(args.pairs, seed=0, mode=mode, num_matches=args.num_matches)
        seconds = []
        for _ in tqdm(range(args.repeats), desc=mode, leave=False):
            start = time.perf_counter()
            for i in range(len(data)):
                data[i]
            seconds.append(time.perf_counter() - start)
        print(
            f"{mode:8s} single process: {args.pairs / min(seconds):8.1f} pairs/s "
            f"(N={args.num_matches})"
        )
    data = SyntheticPairs(args.pairs, seed=0, mode="mixed", num_matches=args.num_matches)
    loader = DataLoader(
        data, batch_size=args.batch_size, num_workers=args.workers, collate_fn=PairCollator(seed=0)
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    rate = args.pairs / (time.perf_counter() - start)
    print(
        f"mixed    DataLoader, {args.workers} workers, batch {args.batch_size}: "
        f"{rate:8.1f} pairs/s "
        f"(includes worker start-up)"
    )


if __name__ == "__main__":
    main()
