"""Is the graph layer of a checkpoint alive?  Per stage: open gates and their inlier ranking.

    python benchmarks/graph_liveness.py [--checkpoint PATH] [--data FILE.hdf5|synthetic]
        [--max-pairs K] [--json OUT]

For every stage s, over the matches that stage sees on each pair (batch 1, eval mode, float32):
``open`` = share of matches with a > 0, a = relu(tanh(w)) the node weights of the stage's
graph Laplacian (a = 0 everywhere makes L the identity: the layer is dead); ``auc`` = ROC AUC
of a against the ground-truth labels, all pairs' matches pooled, ties counting one half;
``auc/pair`` = the mean of the per-pair AUCs.  ``--checkpoint`` defaults to the shipped
weights, ``--data`` to the synthetic test split.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

from corrnet.atomic import atomic_path
from corrnet.checkpoint import load_model
from corrnet.datasets.factory import open_dataset
from corrnet.models.graph_stats import graph_liveness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="graph_liveness.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="exported .pt or Lightning .ckpt (default: the shipped weights)",
    )
    parser.add_argument("--data", default="synthetic", help="OANet-format HDF5 file or 'synthetic'")
    parser.add_argument("--max-pairs", type=int, default=None, help="first K pairs only")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.max_pairs is not None and args.max_pairs < 1:
        parser.error(f"--max-pairs: expected a positive count, got {args.max_pairs}")
    torch.set_num_threads(1)
    try:
        model = load_model(args.checkpoint)
        data = open_dataset(args.data, "test", side_info=model.config.channels)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    pairs = len(data) if args.max_pairs is None else min(args.max_pairs, len(data))
    stats = graph_liveness(model, itertools.islice((data[i] for i in range(len(data))), pairs))
    print(f"{args.checkpoint or 'shipped weights'} on {args.data}: {pairs} pairs")
    print(f"{'stage':>5} {'matches':>9} {'open %':>7} {'auc':>6} {'auc/pair':>8}")
    for s, row in enumerate(stats):
        print(
            f"{s:>5} {row['matches']:>9} {100 * row['open']:>7.1f} {row['auc']:>6.3f} "
            f"{row['auc_pair_mean']:>8.3f}"
        )
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(
                json.dumps(
                    {
                        "checkpoint": str(args.checkpoint or "shipped"),
                        "data": args.data,
                        "pairs": pairs,
                        "stages": stats,
                    },
                    indent=2,
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
