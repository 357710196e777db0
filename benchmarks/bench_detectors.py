"""Time of each detector's features and matching on real image pairs.

    python benchmarks/bench_detectors.py [--raw ../shared/real-dev] [--pairs 10]
                                         [--num-features 2000] [--detectors sift orb akaze]

The first ``--pairs`` pairs of the raw folder (OANet's layout): per detector
(:func:`corrnet.datasets.prepare.detect_features`, one thread) the median ms per image of
the features and per pair of the nearest-neighbour matching
(:func:`corrnet.datasets.prepare.putative_matches`), with the median keypoints per image.
A detector the installed OpenCV lacks (AKAZE in OpenCV 5 without the contrib modules) gets a
row saying so.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2

from corrnet.constants import DETECTORS, NUM_FEATURES
from corrnet.datasets import prepare
from corrnet.errors import UserError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=Path("../shared/real-dev"))
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--num-features", type=int, default=NUM_FEATURES)
    parser.add_argument("--detectors", nargs="+", choices=DETECTORS, default=list(DETECTORS))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    specs = [s for q in prepare.find_sequences(args.raw) for s in prepare.read_sequence(q)]
    specs = specs[: args.pairs]
    images = {p: prepare.read_image(p) for s in specs for p in (s.image1, s.image2)}
    print(f"{len(specs)} pairs, {len(images)} images of {args.raw}, K = {args.num_features}")
    print(f"{'detector':<9} {'ms/image':>9} {'keypoints':>10} {'matching ms/pair':>17}")
    for detector in args.detectors:
        feats, times = {}, []
        try:
            for path, img in images.items():
                start = time.perf_counter()
                feats[path] = prepare.detect_features(img, args.num_features, detector)
                times.append((time.perf_counter() - start) * 1e3)
        except UserError as err:
            print(f"{detector:<9} n/a: {err}")
            continue
        matching = []
        for s in specs:
            start = time.perf_counter()
            prepare.putative_matches(feats[s.image1], feats[s.image2], s.K1, s.K2)
            matching.append((time.perf_counter() - start) * 1e3)
        count = statistics.median(len(f.kp) for f in feats.values())
        print(
            f"{detector:<9} {statistics.median(times):>9.0f} {count:>10.0f} "
            f"{statistics.median(matching):>17.0f}"
        )


if __name__ == "__main__":
    main()
