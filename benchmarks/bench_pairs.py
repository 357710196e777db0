"""Pairs mode against one ``corrnet.match`` process per pair, on N real-dev pairs.

    python benchmarks/bench_pairs.py [--raw ../shared/real-dev] [-n 100] [--batch-size 16]
                                     [--workers W] [--device cpu] [--out DIR]

The N pairs (drawn over every sequence with seed 0, ``prepare.select_pairs``) with their true
intrinsics go once through ``corrnet.pairs.run_pairs`` (one process: weights loaded once, SIFT
once per image, the network batched, PoseLib in W processes) and once through N calls of
``python -m corrnet.match --no-picture`` (each a process of its own: interpreter, imports,
weights, SIFT of both images).  Prints seconds and pairs/s per stage for both, the per-pair
time ratio, and the median pose error against the ground truth of each (OANet's max(rotation,
translation) in degrees, 180 for a pair without pose), which should agree.

Stage times of the pairs mode are those the main process spends in each stage (waiting for
the pool where a stage runs there); single calls report theirs in pose.json (``times_ms``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from corrnet.datasets.prepare import find_sequences, read_sequence, select_pairs
from corrnet.eval.evaluate import default_workers
from corrnet.geometry import pose_errors
from corrnet.pairs import run_pairs

ROOT = Path(__file__).resolve().parents[1]


def _error(R: np.ndarray, t: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray) -> float:
    """max(rotation, translation) error in degrees; 180 without a pose (or without t)."""
    if not (np.isfinite(R).all() and np.isfinite(t).all()):
        return 180.0
    err_R, err_t = pose_errors(
        *(torch.from_numpy(np.asarray(a, np.float64)) for a in (R, t, R_gt, t_gt))
    )
    return max(float(err_R), float(err_t))


def _k(K: np.ndarray) -> list[str]:
    return [repr(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--raw", type=Path, default=ROOT.parent / "shared" / "real-dev")
    parser.add_argument("-n", type=int, default=100, help="pairs (default 100)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    try:
        specs = select_pairs(
            [p for s in find_sequences(args.raw) for p in read_sequence(s)], args.n, 0
        )
    except (OSError, ValueError) as err:
        parser.error(str(err))
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-pairs-"))
    work.mkdir(parents=True, exist_ok=True)
    root = args.raw.resolve()
    name = lambda p: str(Path(p).resolve().relative_to(root))
    Ks = {name(s.image1): s.K1 for s in specs} | {name(s.image2): s.K2 for s in specs}
    (work / "pairs.txt").write_text("".join(f"{name(s.image1)} {name(s.image2)}\n" for s in specs))
    (work / "intrinsics.txt").write_text("".join(f"{n} {' '.join(_k(K))}\n" for n, K in Ks.items()))

    stats = run_pairs(
        work / "pairs.txt",
        root,
        work / "pairs-out",
        work / "intrinsics.txt",
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        overwrite=True,
        progress=False,
    )
    with open(work / "pairs-out" / "poses.csv") as f:
        rows = list(csv.reader(f))[1:]
    err_pairs = [
        _error(np.array(r[2:11], float).reshape(3, 3), np.array(r[11:14], float), s.R, s.t)
        for r, s in zip(rows, specs)
    ]

    single = dict.fromkeys(("sift", "matching", "load", "network", "estimator"), 0.0)
    err_single, wall_single = [], 0.0
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for k, s in enumerate(specs):
        out = work / "single" / str(k)
        command = [
            sys.executable,
            "-m",
            "corrnet.match",
            str(s.image1),
            str(s.image2),
            "--K1",
            *_k(s.K1),
            "--K2",
            *_k(s.K2),
            "--out",
            str(out),
            "--no-picture",
            "--overwrite",
            "--device",
            args.device,
        ]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
        wall_single += time.perf_counter() - start
        if result.returncode != 0:
            err_single.append(180.0)
            continue
        pose = json.loads((out / "pose.json").read_text())
        for stage in single:
            single[stage] += pose["times_ms"].get(stage, 0.0) / 1e3
        R, t = (np.array(pose[k] if pose[k] is not None else np.nan, float) for k in "Rt")
        err_single.append(_error(R, t, s.R, s.t))

    n = len(specs)
    print(
        f"{n} real-dev pairs, {len(Ks)} images; pairs mode: batch size {args.batch_size}, "
        f"{args.workers} workers, device {args.device}; single: {n} corrnet.match processes"
    )
    print(f"{'stage':<12}{'pairs s':>10}{'pairs/s':>10}{'single s':>10}{'pairs/s':>10}")
    stages = {
        "sift": ("sift", "sift"),
        "matching": ("matching", "matching"),
        "load": (None, "load"),
        "network": ("network", "network"),
        "estimator": ("estimator", "estimator"),
        "writing": ("writing", None),
    }
    cells = lambda s: f"{s:>10.2f}{n / s:>10.2f}" if s else f"{'-':>10}{'-':>10}"
    for stage, (a, b) in stages.items():
        print(f"{stage:<12}{cells(stats.seconds[a] if a else 0.0)}{cells(single[b] if b else 0.0)}")
    print(f"{'wall':<12}{cells(stats.wall)}{cells(wall_single)}")
    print(
        f"per pair: pairs mode {1e3 * stats.wall / n:.0f} ms, "
        f"single {1e3 * wall_single / n:.0f} ms, "
        f"ratio {wall_single / stats.wall:.1f}x; median pose error {np.median(err_pairs):.2f} deg "
        f"(pairs mode) vs {np.median(err_single):.2f} deg (single); {work}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
