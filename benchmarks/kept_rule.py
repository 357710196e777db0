"""Which matches to hand PoseLib, measured over several RANSAC seeds.

    python benchmarks/kept_rule.py --data data/real-train/val-sceaux-kitchen.hdf5 \\
        [--checkpoint CKPT [CKPT ...]] [--thresholds -0.5 0 0.5 1 2] [--seeds 1 2 3 4] \\
        [--groups sceaux_castle:0:55 kitchen:55:167] [--oracle [PX ...]] [--workers 2]

Rows, each PoseLib's LO-RANSAC at 1 px (``eval.py``'s ``poselib``) on a subset of the matches:

* ``logit > T`` for each ``--thresholds`` T: the kept rule with threshold T (fewer than 8 such
  matches: the 8 best, as :func:`corrnet.eval.predict.kept_matches`); T = 0 is ``corrnet+poselib``;
* ``logit > 0, PROSAC``: the same kept matches, best logit first, with PoseLib's progressive
  sampling (minimal samples drawn from the most confident matches first);
* ``ratio < 0.8``: ``ratio+poselib``, the reference;
* with ``--oracle``, the ceilings of a perfect classifier: ``labels``, the file's labelled inliers
  (what the network is scored against), and ``labels < PX px`` for each PX given (default 1), the
  labelled inliers whose Sampson error under the ground truth is below PX pixels (the network's
  ``label_px`` positives).  Neither needs the network.

With several checkpoints the logits are their mean (an ensemble).  Columns, per group of pairs
(``NAME:START:END``, pair positions; default all): OANet's mAP5 / mAP10 / mAP20 in %, each the
mean over the seeds, then the lowest and highest mAP5 of a single seed: the spread that RANSAC's
sampling alone puts on a score.  Use it on validation data: choices made on real-dev do not
transfer.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from corrnet.checkpoint import PRETRAINED, load_model
from corrnet.datasets.factory import open_dataset
from corrnet.eval.estimators import PoseLibEstimator, PoseTask, check_seed
from corrnet.eval.evaluate import RATIO_THRESHOLD, check_inputs, run_network, run_pose_jobs
from corrnet.eval.metrics import oanet_map
from corrnet.eval.predict import kept_matches
from corrnet.geometry import pose_errors
from corrnet.models import make_predictor
from corrnet.models.loss import pixel_positives

PROSAC = "logit > 0, PROSAC"
RATIO = f"ratio < {RATIO_THRESHOLD}"
LABELS = "labels"


def oracle_row(px: float) -> str:
    """The row name of the labelled inliers within ``px`` pixels of the ground truth."""
    return f"labels < {px:g} px"


def threshold_row(T: float) -> str:
    """The row name of the kept rule at threshold T."""
    return f"logit > {T:g}"


def mean_logits(samples: Sequence[dict], models: Sequence[torch.nn.Module]) -> list[np.ndarray]:
    """The mean over ``models`` of each sample's logits (N,), batch size 1, on the CPU."""
    predictors = [make_predictor(m) for m in models]
    return [
        np.mean([run_network(s, p, ("logits",))[0]["logits"].numpy() for p in predictors], 0)
        for s in tqdm(samples, desc="network", unit="pair")
    ]


def subsets(
    logits: np.ndarray,
    ratios: np.ndarray,
    thresholds: Sequence[float],
    sample: dict | None = None,
    oracle: Sequence[float] = (),
) -> dict[str, tuple[np.ndarray, bool]]:
    """Each row's match indices (in the order PoseLib gets them) and whether it samples
    progressively, for one pair: logits, ratios (N,); with ``sample`` (its ``labels``, ``xs``,
    ``R``, ``t``, ``K1``, ``K2``) also the oracle rows, the labelled inliers and those within each
    ``oracle`` pixels of the ground truth."""
    scores = torch.from_numpy(np.asarray(logits, np.float64))[None]
    rows = {
        threshold_row(T): (np.flatnonzero(kept_matches(scores - T)[0].numpy()), False)
        for T in thresholds
    }
    kept = np.flatnonzero(kept_matches(scores)[0].numpy())
    rows[PROSAC] = (kept[np.argsort(-logits[kept], kind="stable")], True)
    rows[RATIO] = (np.flatnonzero(ratios < RATIO_THRESHOLD), False)
    if sample is not None:
        for name, px in ((LABELS, None), *((oracle_row(px), px) for px in oracle)):
            rows[name] = (np.flatnonzero(pixel_positives(sample, px).numpy()), False)
    return rows


def measure(
    samples: Sequence[dict],
    logits: Sequence[np.ndarray],
    thresholds: Sequence[float],
    seeds: Sequence[int],
    workers: int,
    oracle: Sequence[float] | None = None,
) -> dict[tuple[str, int], np.ndarray]:
    """Pose errors (P,) in degrees, max(rotation, translation), of every (row, seed); with
    ``oracle`` (pixel thresholds, possibly none) the oracle rows too."""
    jobs = []
    for i, (s, lg) in enumerate(zip(samples, logits)):
        f64 = lambda k, s=s: np.asarray(s[k], np.float64)
        tasks: list[PoseTask] = [
            (f"{row}|{seed}", PoseLibEstimator(seed=seed, progressive=progressive), indices)
            for row, (indices, progressive) in subsets(
                lg,
                f64("ratios").reshape(-1),
                thresholds,
                None if oracle is None else s,
                oracle or (),
            ).items()
            for seed in seeds
        ]
        jobs.append(
            (i, f64("xs").reshape(-1, 4), f64("K1").reshape(3, 3), f64("K2").reshape(3, 3), tasks)
        )
    errors: dict[tuple[str, int], np.ndarray] = {}
    for i, outcomes in run_pose_jobs(jobs, workers, progress=True):
        R_gt = torch.from_numpy(np.asarray(samples[i]["R"], np.float64).reshape(3, 3))
        t_gt = torch.from_numpy(np.asarray(samples[i]["t"], np.float64).reshape(3))
        for name, R, t, _, _ in outcomes:
            row, seed = name.rsplit("|", 1)
            err_R, err_t = pose_errors(torch.from_numpy(R), torch.from_numpy(t), R_gt, t_gt)
            errors.setdefault((row, int(seed)), np.zeros(len(samples)))[i] = max(
                float(err_R), float(err_t)
            )
    return errors


def table(errors: dict[tuple[str, int], np.ndarray], groups: Sequence[tuple[str, int, int]]) -> str:
    """One line per row: per group, mAP5/10/20 (%) averaged over the seeds and the seeds' mAP5
    range."""
    rows = list(dict.fromkeys(row for row, _ in errors))
    seeds = sorted({seed for _, seed in errors})
    lines = [
        f"{'matches':20s}"
        + "".join(f"  {name + f' ({end - start})':>30s}" for name, start, end in groups)
    ]
    for row in rows:
        cells = []
        for _, start, end in groups:
            maps = [oanet_map(errors[row, seed][start:end]) for seed in seeds]
            mean = "/".join(
                f"{100 * np.mean([m[k] for m in maps]):.1f}" for k in ("mAP5", "mAP10", "mAP20")
            )
            five = [100 * m["mAP5"] for m in maps]
            cells.append(f"{mean} [{min(five):.1f}-{max(five):.1f}]")
        lines.append(f"{row:20s}" + "".join(f"  {c:>30s}" for c in cells))
    return "\n".join(lines)


def parse_group(text: str) -> tuple[str, int, int]:
    """``NAME:START:END`` -> (name, start, end)."""
    try:
        name, start, end = text.rsplit(":", 2)
        return name, int(start), int(end)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NAME:START:END (pair positions), got {text!r}"
        ) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="OANet-format HDF5 file (or 'synthetic')")
    parser.add_argument(
        "--checkpoint",
        nargs="+",
        default=[str(PRETRAINED)],
        metavar="CKPT",
        help="weights; several: their logits are averaged (default: the shipped ones)",
    )
    parser.add_argument(
        "--thresholds", nargs="+", type=float, default=[-0.5, 0.0, 0.5, 1.0, 2.0], metavar="T"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4], metavar="S")
    parser.add_argument("--groups", nargs="+", type=parse_group, metavar="NAME:START:END")
    parser.add_argument(
        "--oracle",
        nargs="*",
        type=float,
        metavar="PX",
        help="add the oracle rows: the labelled inliers, and those within each PX pixels "
        "of the ground truth (default 1)",
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers: expected a positive number")
    if args.oracle == []:
        args.oracle = [1.0]
    if args.oracle and not all(px > 0 for px in args.oracle):
        parser.error(f"--oracle: expected positive numbers of pixels, got {args.oracle}")
    try:
        [check_seed(s) for s in args.seeds]
    except ValueError as error:
        parser.error(f"--seeds: {error}")
    models = [load_model(c) for c in args.checkpoint]
    side_info = {m.config.channels for m in models}
    if len(side_info) > 1:
        parser.error("--checkpoint: the weights differ in side_info (their inputs differ)")
    dataset = open_dataset(args.data, "test", side_info=side_info.pop())
    try:  # every row is PoseLib (pixels), one of them on the ratio test
        check_inputs(dataset, ["ratio+poselib"])
    except ValueError as error:
        parser.error(str(error))
    samples = [dataset[i] for i in range(len(dataset))]
    groups = args.groups or [("all", 0, len(samples))]
    bad = [g for g in groups if not 0 <= g[1] < g[2] <= len(samples)]
    if bad:
        parser.error(
            f"--groups: {bad[0][0]}: expected 0 <= START < END <= {len(samples)} pairs of "
            f"{args.data}"
        )
    torch.set_num_threads(1)
    errors = measure(
        samples,
        mean_logits(samples, models),
        args.thresholds,
        args.seeds,
        args.workers,
        args.oracle,
    )
    print(
        f"{args.data}, {len(samples)} pairs, checkpoints {' '.join(args.checkpoint)}, "
        f"PoseLib seeds {' '.join(map(str, args.seeds))}: mAP5/10/20 (%) averaged over the "
        f"seeds [lowest-highest mAP5]"
    )
    print(table(errors, groups))


if __name__ == "__main__":
    main()
