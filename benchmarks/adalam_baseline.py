"""AdaLAM + PoseLib, a hand-crafted baseline on the SIFT features of a prepared file.

    python benchmarks/adalam_baseline.py --data FILE.hdf5 [--num-features K] [--seed S]
        [--workers 2] [--groups entry_P10:0:24 fountain_P11:24:51 ...] [--out per_pair.csv]

Needs kornia (``pip install -e '.[baselines]'``).  For every pair of a file written by
``data/prepare.py`` (which records its image paths), SIFT is computed again on both images with
the preparation's own extraction (:func:`corrnet.datasets.prepare.sift_features`, each image
once per run, K keypoints: default the file's ``num_features``) and checked against the file:
the same number of image-1 keypoints with the same sizes and angles (the file keeps one match
per image-1 keypoint, in OpenCV's order), and the same image-2 keypoint for every match
(:func:`~corrnet.datasets.prepare.nearest_neighbours`).  A pair that fails is counted, named
and left out of every row.  Keypoint positions are compared too and reported, not required: a
preparation that undistorts (COLMAP cameras with distortion) stores undistorted positions.

kornia's AdaLAM (``kornia.feature.match_adalam``, Cavalli et al., ECCV 2020) with its default
configuration, on the CPU, one torch thread, the torch generator seeded with ``--seed`` before
every pair, gets the descriptors, each image's size and a local affine frame per keypoint
(:func:`sift_lafs`).  Its matches are nearest-neighbour matches of image-1 keypoints, so each is
one of the file's matches (its image-2 keypoint is checked; one that is not is counted and
dropped); PoseLib then sees the file's coordinates of those matches, exactly as ``eval.py``
sees a subset.

Rows, each eval.py's PoseLib (LO-RANSAC, 1 px, seeded with ``--seed``) through eval's own
:func:`corrnet.eval.evaluate.evaluate` on the same pairs: ``adalam+poselib`` (eval's
``poselib`` on a sample holding AdaLAM's matches only), ``ratio+poselib`` and ``poselib`` (all
matches).  Columns per group (``NAME:START:END``, pair positions in the file; default all):
OANet's mAP5/10/20 and the AUC at 5/10/20° in % (:mod:`corrnet.eval.metrics`), the median
number of matches PoseLib sees, the mean fraction of them labelled inliers, and the mean ms per
pair of AdaLAM (main process) and of PoseLib (timed in its worker).  ``--out`` writes one CSV
row per pair and method.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from corrnet.atomic import atomic_path
from corrnet.datasets.oanet_hdf5 import IMAGE_KEYS, OANetPairs
from corrnet.datasets.prepare import (
    NUM_FEATURES,
    NUM_FEATURES_ATTR,
    Features,
    nearest_neighbours,
    read_image,
    recorded_attr,
    sift_features,
)
from corrnet.datasets.sample import to_pixels
from corrnet.errors import one_line
from corrnet.eval.estimators import SEED, check_seed, make_estimators
from corrnet.eval.evaluate import (
    NETWORK_THREADS,
    RATIO_THRESHOLD,
    EvalResult,
    check_inputs,
    evaluate,
    torch_threads,
)
from corrnet.eval.metrics import oanet_map, pose_auc

ADALAM, RATIO, ALL = "adalam+poselib", "ratio+poselib", "poselib"
ROWS = (ADALAM, RATIO, ALL)
SIFT_LAF_SCALE = 3.0
"""LAF scale per unit of ``cv2.KeyPoint.size``.  OpenCV's SIFT size is twice the detection
sigma, and kornia's DoG frames are ``mr_size`` = 6 sigma (kornia 0.9 documents its doubled
12-sigma frames as six times ``KeyPoint.size``), so 3 x size is the frame kornia's own SIFT
detector gives the keypoint.  AdaLAM reads scales only as ratios between the two images, so the
factor does not change its matches (kornia_moons' ``laf_from_opencv_SIFT_kpts`` uses 6)."""
POSITION_TOLERANCE_PX = 0.01
"""A recomputed keypoint is at the file's position when within this many pixels (the file
stores float32 normalised coordinates)."""


def sift_lafs(feats: Features) -> torch.Tensor:
    """kornia local affine frames (1, n, 2, 3) float32 of SIFT :class:`Features`.

    Centre: ``kp`` (pixels); scale: :data:`SIFT_LAF_SCALE` x ``sizes``; orientation:
    ``-angles``.  OpenCV's angle turns clockwise on screen (image coordinates, y down), kornia's
    orientation counter-clockwise (``laf_from_center_scale_ori``), so the LAF's first column,
    the image of the patch's x axis, points along (cos angle, sin angle) in pixels.
    """
    import kornia.feature as KF

    n = len(feats.kp)
    as_tensor = lambda a, *shape: torch.as_tensor(a, dtype=torch.float32).reshape(1, n, *shape)
    return KF.laf_from_center_scale_ori(
        as_tensor(feats.kp, 2),
        as_tensor(SIFT_LAF_SCALE * feats.sizes, 1, 1),
        as_tensor(-feats.angles, 1),
    )


def adalam(
    feats1: Features, feats2: Features, shape1: Sequence[int], shape2: Sequence[int], seed: int
) -> tuple[np.ndarray, float]:
    """AdaLAM's matches (M, 2) int (image-1, image-2 keypoint indices) with its default
    configuration on the CPU, and its wall time in ms.  shape: each image's (h, w)."""
    import kornia.feature as KF

    lafs1, lafs2 = sift_lafs(feats1), sift_lafs(feats2)
    desc1, desc2 = torch.from_numpy(feats1.desc), torch.from_numpy(feats2.desc)
    torch.manual_seed(seed)
    start = time.perf_counter()
    _, idx = KF.match_adalam(desc1, desc2, lafs1, lafs2, hw1=shape1[:2], hw2=shape2[:2])
    return idx.numpy().reshape(-1, 2).astype(np.int64), (time.perf_counter() - start) * 1e3


class FeatureCheck(NamedTuple):
    """How the recomputed features of a pair agree with the file's matches.

    ``problem``: None when the features are the file's (count, sizes and angles of image 1,
    the image-2 keypoint of every match), else what differs; ``nn`` (N,): the index of each
    match's image-2 keypoint; ``position_px``: the largest distance (pixels) between a
    recomputed keypoint and the file's (either image).
    """

    problem: str | None
    nn: np.ndarray
    position_px: float


def check_features(sample: Mapping, feats1: Features, feats2: Features) -> FeatureCheck:
    """Compare recomputed :class:`Features` with a pair's matches (a sample of
    :class:`~corrnet.datasets.OANetPairs` with ``sizes`` and ``angles``)."""
    xs = np.asarray(sample["xs"], np.float64).reshape(-1, 4)
    n = len(xs)
    if len(feats1.kp) != n or len(feats2.kp) < 2:
        return FeatureCheck(
            f"{len(feats1.kp)} image-1 keypoints, the file has {n} matches",
            np.zeros(0, int),
            np.inf,
        )
    nn = nearest_neighbours(feats1.desc, feats2.desc)[0]
    sizes, angles = (np.asarray(sample[k], np.float32).reshape(n, 2) for k in ("sizes", "angles"))
    f32 = lambda a: np.asarray(a, np.float32)
    differ = [
        name
        for name, ours, file in (
            ("image-1 sizes", f32(feats1.sizes), sizes[:, 0]),
            ("image-1 angles", f32(feats1.angles), angles[:, 0]),
            ("image-2 sizes", f32(feats2.sizes[nn]), sizes[:, 1]),
            ("image-2 angles", f32(feats2.angles[nn]), angles[:, 1]),
        )
        if not np.array_equal(ours, file)
    ]
    K1, K2 = (np.asarray(sample[k], np.float64).reshape(3, 3) for k in ("K1", "K2"))
    position = max(
        float(np.abs(to_pixels(xs[:, :2], K1) - feats1.kp).max()),
        float(np.abs(to_pixels(xs[:, 2:], K2) - feats2.kp[nn]).max()),
    )
    return FeatureCheck(f"{', '.join(differ)} differ" if differ else None, nn, position)


class Measurement(NamedTuple):
    """The rows on the pairs whose features agree with the file.

    ``positions`` (P,): their pair positions in the file; ``result``: eval's results of every
    row (:data:`ROWS`) with pair positions 0..P-1; ``matches``, ``inlier_fraction`` (P,) per row;
    ``adalam_ms`` (P,); ``skipped``: (pair position, why) of the pairs left out; ``dropped``:
    AdaLAM matches that are not the file's match of their image-1 keypoint; ``off_position``:
    pairs whose keypoint positions differ from the file's by more than
    :data:`POSITION_TOLERANCE_PX` (the largest difference in ``max_position_px``).
    """

    positions: np.ndarray
    result: EvalResult
    matches: dict[str, np.ndarray]
    inlier_fraction: dict[str, np.ndarray]
    adalam_ms: np.ndarray
    skipped: list[tuple[int, str]]
    dropped: int
    off_position: int
    max_position_px: float

    def errors(self, row: str) -> np.ndarray:
        """Pair errors (P,) max(rotation, translation) in degrees of ``row``."""
        return self.result.errors(row)

    def poselib_ms(self, row: str) -> np.ndarray:
        """PoseLib's ms (P,) per pair of ``row``."""
        return np.array([r.ms for r in self.result.of(row)])


def _subset(sample: Mapping, indices: np.ndarray) -> dict:
    """The sample with only the matches ``indices`` (what eval's ``poselib`` reads of them)."""
    keep = torch.as_tensor(indices, dtype=torch.long)
    return {**sample, **{k: torch.as_tensor(sample[k])[keep] for k in ("xs", "labels", "ratios")}}


@contextmanager
def opencv_threads(threads: int) -> Iterator[None]:
    """Run the block with OpenCV on ``threads`` threads, then restore the setting."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def measure(
    dataset: OANetPairs,
    num_features: int,
    seed: int = SEED,
    workers: int = 2,
    progress: bool = True,
) -> Measurement:
    """AdaLAM on recomputed SIFT, then the rows through :func:`evaluate` (module docstring).

    AdaLAM runs on :data:`~corrnet.eval.evaluate.NETWORK_THREADS` torch thread(s) and everything
    here with OpenCV on one thread: a forked PoseLib worker that changes OpenCV's thread count
    (:func:`~corrnet.eval.estimators.init_worker`) can hang once this process's OpenCV thread
    pool has run (SIFT).
    """
    with torch_threads(NETWORK_THREADS), opencv_threads(1):
        return _measure(dataset, num_features, seed, workers, progress)


def _measure(
    dataset: OANetPairs, num_features: int, seed: int, workers: int, progress: bool
) -> Measurement:
    cache: dict[str, tuple[Features, tuple[int, ...]]] = {}

    def features(path: str) -> tuple[Features, tuple[int, ...]]:
        if path not in cache:
            image = read_image(path)
            cache[path] = sift_features(image, num_features), image.shape
        return cache[path]

    kept, subsets, positions, adalam_ms = [], [], [], []
    skipped: list[tuple[int, str]] = []
    dropped, off_position, max_px = 0, 0, 0.0
    for i in tqdm(range(len(dataset)), desc="SIFT + AdaLAM", unit="pair", disable=not progress):
        sample = dataset[i]
        (f1, shape1), (f2, shape2) = features(sample["image1"]), features(sample["image2"])
        check = check_features(sample, f1, f2)
        if check.problem is not None:
            skipped.append((i, check.problem))
            continue
        off_position += check.position_px > POSITION_TOLERANCE_PX
        max_px = max(max_px, check.position_px)
        pairs, ms = adalam(f1, f2, shape1, shape2, seed)
        # the file's match of an image-1 keypoint goes to its nearest neighbour; a tie
        # between keypoints at the same position gives the same coordinates
        same = np.all(f2.kp[pairs[:, 1]] == f2.kp[check.nn[pairs[:, 0]]], axis=1)
        dropped += int((~same).sum())
        kept.append(sample)
        subsets.append(_subset(sample, pairs[same, 0]))
        positions.append(i)
        adalam_ms.append(ms)
    if not kept:
        raise ValueError(
            f"{dataset.path}: no pair whose recomputed features agree with the file "
            f"(first: pair {skipped[0][0]}: {skipped[0][1]})"
        )
    estimators = make_estimators(seed)
    run = lambda samples, methods: evaluate(
        samples, methods=methods, workers=workers, progress=progress, estimators=estimators
    )
    reference = run(kept, (RATIO, ALL))
    ours = run(subsets, (ALL,))
    for r in ours.results:
        r.method = ADALAM
    result = EvalResult(str(dataset.path), ROWS, len(kept), ours.results + reference.results)
    labels = lambda s: np.asarray(s["labels"], np.float64).reshape(-1)
    ratio_sets = [labels(s)[np.asarray(s["ratios"]).reshape(-1) < RATIO_THRESHOLD] for s in kept]
    label_sets = {
        ADALAM: [labels(s) for s in subsets],
        RATIO: ratio_sets,
        ALL: [labels(s) for s in kept],
    }
    return Measurement(
        np.array(positions),
        result,
        {row: np.array([len(x) for x in sets]) for row, sets in label_sets.items()},
        {
            row: np.array([x.mean() if len(x) else 0.0 for x in sets])
            for row, sets in label_sets.items()
        },
        np.array(adalam_ms),
        skipped,
        dropped,
        off_position,
        max_px,
    )


COLUMNS = (
    "mAP5",
    "mAP10",
    "mAP20",
    "auc5",
    "auc10",
    "auc20",
    "matches",
    "inliers %",
    "AdaLAM ms",
    "PoseLib ms",
)


def table(m: Measurement, groups: Sequence[tuple[str, int, int]]) -> str:
    """Per group and row: mAP and AUC in %, median matches, mean inlier fraction in %, mean ms
    of AdaLAM and of PoseLib per pair."""
    header = f"{'group':24s} {'method':16s}" + "".join(f" {c:>10s}" for c in COLUMNS)
    lines = [header]
    for name, start, end in groups:
        mask = (m.positions >= start) & (m.positions < end)
        if not mask.any():
            lines.append(f"{name:24s} (no pair whose features agree with the file)")
            continue
        label = f"{name} ({int(mask.sum())})"
        for row in ROWS:
            e = m.errors(row)[mask]
            scores = {**oanet_map(e), **pose_auc(e)}
            cells = [f"{100 * scores[k]:.1f}" for k in COLUMNS[:6]] + [
                f"{np.median(m.matches[row][mask]):.0f}",
                f"{100 * m.inlier_fraction[row][mask].mean():.1f}",
                f"{m.adalam_ms[mask].mean():.0f}" if row == ADALAM else "-",
                f"{m.poselib_ms(row)[mask].mean():.1f}",
            ]
            lines.append(f"{label:24s} {row:16s}" + "".join(f" {c:>10s}" for c in cells))
    return "\n".join(lines)


def write_csv(m: Measurement, out: Path) -> None:
    """One row per pair and method: pair (file position), method, matches, inlier fraction,
    err_R, err_t, err (degrees), adalam_ms, poselib_ms; written atomically."""
    with atomic_path(out, suffix=".tmp.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "pair",
                "method",
                "matches",
                "inlier_fraction",
                "err_R",
                "err_t",
                "err",
                "adalam_ms",
                "poselib_ms",
            ]
        )
        for row in ROWS:
            for k, r in enumerate(m.result.of(row)):
                writer.writerow(
                    [
                        int(m.positions[k]),
                        row,
                        int(m.matches[row][k]),
                        f"{m.inlier_fraction[row][k]:.4f}",
                        f"{r.err_R:.4f}",
                        f"{r.err_t:.4f}",
                        f"{r.err:.4f}",
                        f"{m.adalam_ms[k]:.1f}" if row == ADALAM else "",
                        f"{r.ms:.2f}",
                    ]
                )


def _sibling(name: str) -> object:
    """The script ``benchmarks/<name>.py`` beside this one, as a module."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parse_group: Callable = _sibling("kept_rule").parse_group
    parser.add_argument("--data", required=True, type=Path, help="HDF5 file of data/prepare.py")
    parser.add_argument(
        "--num-features",
        type=int,
        metavar="K",
        help="SIFT keypoints per image (default: the file's num_features)",
    )
    parser.add_argument("--seed", type=int, default=SEED, help="PoseLib's and AdaLAM's seed")
    parser.add_argument("--workers", type=int, default=2, help="PoseLib processes")
    parser.add_argument("--groups", nargs="+", type=parse_group, metavar="NAME:START:END")
    parser.add_argument("--out", type=Path, help="per-pair CSV")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers: expected a positive number")
    try:
        check_seed(args.seed)
    except ValueError as error:
        parser.error(f"--seed: {error}")
    if importlib.util.find_spec("kornia") is None:
        parser.error("kornia is not installed; pip install -e '.[baselines]'")
    try:
        dataset = OANetPairs(args.data)
        dataset.require(IMAGE_KEYS, "the image paths that data/prepare.py records")
        dataset.require(("sizes", "angles"), "the keypoint sizes and angles of data/prepare.py")
        check_inputs(dataset, [RATIO])
        recorded = recorded_attr(args.data, NUM_FEATURES_ATTR)
    except (OSError, ValueError) as error:
        parser.error(one_line(error))
    num_features = args.num_features or int(recorded if recorded is not None else NUM_FEATURES)
    if num_features < 2:
        parser.error(f"--num-features: expected at least 2 keypoints, got {num_features}")
    groups = args.groups or [("all", 0, len(dataset))]
    bad = [g for g in groups if not 0 <= g[1] < g[2] <= len(dataset)]
    if bad:
        parser.error(
            f"--groups: {bad[0][0]}: expected 0 <= START < END <= {len(dataset)} "
            f"pairs of {args.data}"
        )
    try:
        m = measure(dataset, num_features, args.seed, args.workers)
    except (OSError, ValueError) as error:
        parser.error(one_line(error))
    print(
        f"{args.data}: SIFT {num_features}, seed {args.seed}; {len(m.positions)} of "
        f"{len(dataset)} pairs have the file's features, {len(m.skipped)} left out; keypoint "
        f"positions off by > {POSITION_TOLERANCE_PX} px in "
        f"{m.off_position} pairs (largest {m.max_position_px:.2f} px); {m.dropped} AdaLAM "
        f"matches not among the file's dropped"
    )
    for i, why in m.skipped[:5]:
        print(f"  left out: pair {i}: {why}")
    print(table(m, groups))
    if args.out is not None:
        write_csv(m, args.out)
        print(f"per pair: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
