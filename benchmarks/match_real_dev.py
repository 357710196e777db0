"""corrnet.match on every real-dev pair: pose error against the ground truth, a picture per pair.

    python benchmarks/match_real_dev.py [--raw ../shared/real-dev] [--out runs/match-real-dev]
                                        [--max-pairs K] [--overwrite] [--no-picture]

Each pair goes through the command line's own path (``corrnet.match.main``) with the true
intrinsics, into OUT/<seq>/<i>-<j>/ (pose.json, matches.png unless --no-picture).  Pairs and ground
truth are read
as data/prepare.py reads OANet's raw layout.  Prints the median and the per-sequence medians
of OANet's pair error max(rotation, translation) in degrees (a failed pair counts as 180) and
writes OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from corrnet.atomic import atomic_path
from corrnet.datasets.prepare import find_sequences, read_sequence
from corrnet.geometry import pose_errors
from corrnet.match import main as match_main

ROOT = Path(__file__).resolve().parents[1]


def _k_args(K: np.ndarray) -> list[str]:
    return [repr(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2])]


def main(argv: list[str] | None = None) -> int:
    """Run every pair; returns the exit status (1 if a pair failed)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--raw", type=Path, default=ROOT.parent / "shared" / "real-dev")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "match-real-dev")
    parser.add_argument("--max-pairs", type=int, help="the first K pairs only")
    parser.add_argument("--overwrite", action="store_true", help="replace results in --out")
    parser.add_argument(
        "--no-picture", action="store_true", help="pose.json only (corrnet match --no-picture)"
    )
    args = parser.parse_args(argv)
    try:
        pairs = [p for seq in find_sequences(args.raw) for p in read_sequence(seq)][
            : args.max_pairs
        ]
    except (OSError, ValueError) as err:
        parser.error(str(err))
    rows = []
    for k, spec in enumerate(pairs):
        out = args.out / spec.key
        argv_pair = (
            [
                str(spec.image1),
                str(spec.image2),
                "--K1",
                *_k_args(spec.K1),
                "--K2",
                *_k_args(spec.K2),
                "--out",
                str(out),
            ]
            + (["--overwrite"] if args.overwrite else [])
            + (["--no-picture"] if args.no_picture else [])
        )
        ok = match_main(argv_pair, prog=f"pair {spec.key}") == 0
        err, times = 180.0, {}
        if ok:
            pose = json.loads((out / "pose.json").read_text())
            times = pose["times_ms"]
        if ok and pose["t"] is not None:  # null: translation undefined, counted as a failure
            t_gt = spec.t / np.linalg.norm(spec.t)
            e_R, e_t = pose_errors(
                *(
                    torch.as_tensor(np.asarray(a, np.float64))
                    for a in (pose["R"], pose["t"], spec.R, t_gt)
                )
            )
            err = max(float(e_R), float(e_t))
        rows.append(
            {
                "pair": spec.key,
                "ok": ok,
                "err": err,
                "picture": (out / "matches.png").is_file(),
                "times_ms": times,
            }
        )
        print(f"[{k + 1}/{len(pairs)}] {spec.key}: error {err:.2f} deg", file=sys.stderr)
    errors = np.array([r["err"] for r in rows])
    seqs = sorted({r["pair"].split("/")[0] for r in rows})
    stages = sorted({s for r in rows for s in r["times_ms"]})
    summary = {
        "pairs": len(rows),
        "failed": sum(not r["ok"] for r in rows),
        "pictures": sum(r["picture"] for r in rows),
        "median_err_deg": float(np.median(errors)),
        "acc5": float((errors < 5).mean()),
        "median_err_deg_per_sequence": {
            s: float(np.median([r["err"] for r in rows if r["pair"].startswith(s + "/")]))
            for s in seqs
        },
        "median_ms": {
            s: float(np.median([r["times_ms"][s] for r in rows if s in r["times_ms"]]))
            for s in stages
        },
        "per_pair": rows,
    }
    with atomic_path(args.out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
    per_seq = ", ".join(f"{s} {v:.2f}" for s, v in summary["median_err_deg_per_sequence"].items())
    print(
        f"{len(rows)} pairs, {summary['failed']} failed, {summary['pictures']} pictures; "
        f"median pose error {summary['median_err_deg']:.2f} deg ({per_seq}); "
        f"below 5 deg: {100 * summary['acc5']:.1f} %; "
        f"{args.out / 'summary.json'}"
    )
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
