"""The evidence behind the Verifier's confidence thresholds (``docs/verifier.md``).

    python benchmarks/verifier_thresholds.py [--pairs 150] [--seed 101]
        [--real-train ../shared/real-train] [--real-pairs 20]

Three populations of synthetic pairs (:func:`corrnet.datasets.synthetic.generate_pair`, with
the generator's ratios and mutual flags; never real-dev), each through
:meth:`corrnet.Verifier.verify_many` with the shipped weights:

* ``same scene``: the pairs as generated (true inliers among outliers, wide baselines);
* ``unrelated``: image 1's keypoints of pair i against image 2's keypoints of pair i + 1
  (another scene, another camera), every match an outlier, with the generator's ratio and
  mutual-flag distribution of uniform outliers (Beta(13, 1), 20 % mutual);
* ``rotation``: pair i with its true matches replaced by a pure rotation (x2 = K2 R K1^-1 x1
  plus 1 px Gaussian noise; the outliers unchanged): no translation to measure.

It prints the quantiles of the three statistics the checks read (estimator inliers, their
share of the kept matches, the inliers' median parallax in degrees), then how often each
population passes every check at the thresholds in :mod:`corrnet.verifier`, and the pose
errors of the same-scene pairs that pass and that do not.  With ``--real-train`` it also runs
``corrnet.match_images`` (approximate intrinsics) on adjacent images of each collection and
on the first images of two different collections.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from corrnet import verifier as cv
from corrnet.datasets.sample import to_pixels
from corrnet.datasets.synthetic import MUTUAL_P, RATIO_BETA, generate_pair
from corrnet.geometry import pose_errors

BASELINES = (0.1, 0.03, 0.01)
"""Baseline scales of the shrunk-baseline populations."""


def populations(count: int, seed: int) -> dict[str, list[dict]]:
    """The three populations' verify arguments, each with the pair's true R, t (or None)."""
    rng = np.random.default_rng(seed)
    pairs = [
        {k: v.numpy().astype(np.float64) for k, v in generate_pair(seed, i).items()}
        for i in range(count + 1)
    ]
    out: dict[str, list[dict]] = {"same scene": [], "unrelated": [], "rotation": []}
    for i in range(count):
        p, q = pairs[i], pairs[i + 1]
        uv1, uv2 = to_pixels(p["xs"][:, :2], p["K1"]), to_pixels(p["xs"][:, 2:], p["K2"])
        base = dict(K1=p["K1"], K2=p["K2"], ratios=p["ratios"], mutuals=p["mutuals"])
        out["same scene"].append(dict(kpts1=uv1, kpts2=uv2, **base, gt=(p["R"], p["t"])))
        n = len(uv1)
        out["unrelated"].append(
            dict(
                kpts1=uv1,
                kpts2=to_pixels(q["xs"][:, 2:], q["K2"]),
                K1=p["K1"],
                K2=q["K2"],
                ratios=rng.beta(*RATIO_BETA[1], n),
                mutuals=(rng.random(n) < MUTUAL_P[1]).astype(np.float64),
                gt=None,
            )
        )
        inl = p["labels"] > 0
        f1 = np.column_stack([p["xs"][inl, :2], np.ones(inl.sum())]) @ p["R"].T
        rot = uv2.copy()
        rot[inl] = to_pixels(f1[:, :2] / f1[:, 2:], p["K2"]) + rng.normal(0, 1.0, (inl.sum(), 2))
        out["rotation"].append(dict(kpts1=uv1, kpts2=rot, **base, gt=None))
        for scale in BASELINES:
            moved = uv2.copy()
            moved[inl] = shrunk_baseline(p["xs"][inl], p["R"], p["t"], p["K2"], scale)
            moved[inl] += rng.normal(0, 1.0, (inl.sum(), 2))
            out.setdefault(f"baseline x{scale:g}", []).append(
                dict(kpts1=uv1, kpts2=moved, **base, gt=(p["R"], p["t"]))
            )
    return out


def shrunk_baseline(
    xs: np.ndarray, R: np.ndarray, t: np.ndarray, K2: np.ndarray, scale: float
) -> np.ndarray:
    """Pixels in image 2 of the true matches xs (M, 4) normalised had the baseline been
    ``scale`` times as long: each point triangulated (depth d along f1 with d R f1 + t = l f2
    in least squares), then seen from R, scale t."""
    f1 = np.column_stack([xs[:, :2], np.ones(len(xs))])
    f2 = np.column_stack([xs[:, 2:], np.ones(len(xs))])
    a = f1 @ R.T  # d a - l f2 = -t
    A = np.stack([a, -f2], 2)  # (M, 3, 2)
    At = A.transpose(0, 2, 1)
    d = np.linalg.solve(At @ A, At @ np.broadcast_to(-t, (len(xs), 3))[..., None])[:, 0, 0]
    X2 = a * d[:, None] + scale * t
    return to_pixels(X2[:, :2] / X2[:, 2:], K2)


def stats(v: cv.Verification) -> tuple[float, float, float]:
    return v.num_inliers, v.num_inliers / max(v.num_kept, 1), v.parallax_deg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--real-train", type=Path)
    parser.add_argument("--real-pairs", type=int, default=20)
    args = parser.parse_args()
    verifier = cv.Verifier()
    rows = {}
    for name, pairs in populations(args.pairs, args.seed).items():
        gts = [p.pop("gt") for p in pairs]
        results = verifier.verify_many(pairs, batch_size=8)
        rows[name] = (results, gts)
    q = (0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0)
    print(f"{args.pairs} synthetic pairs per population, seed {args.seed}, shipped weights")
    print(f"{'population':12s} {'statistic':10s} " + " ".join(f"q{int(x * 100):<5d}" for x in q))
    for name, (results, _) in rows.items():
        values = np.array([stats(v) for v in results], np.float64)
        for j, stat in enumerate(("inliers", "share", "parallax")):
            col = values[:, j]
            print(
                f"{name:12s} {stat:10s} " + " ".join(f"{np.nanquantile(col, x):<6.3g}" for x in q)
            )
    print(
        f"\nthresholds: inliers >= {cv.MIN_INLIERS}, share >= {cv.MIN_INLIER_SHARE}, "
        f"parallax >= {cv.MIN_PARALLAX_DEG} deg"
    )
    for name, (results, gts) in rows.items():
        confident = np.array([v.confident for v in results])
        causes = {
            c: sum(any(w.startswith(c) for w in v.warnings) for v in results)
            for c in ("no pose", "too few", "the estimator rejects", "translation")
        }
        line = f"{name:12s} confident {confident.mean():6.1%}  flagged by " + ", ".join(
            f"{c!r}: {k}" for c, k in causes.items()
        )
        print(line)
        if gts[0] is not None:
            errs = np.array(
                [
                    max(
                        float(e)
                        for e in pose_errors(*(torch.as_tensor(a) for a in (v.R, v.t, *gt)))
                    )
                    if v.has_pose
                    else 180.0
                    for v, gt in zip(results, gts)
                ]
            )
            for label, sel in (("confident", confident), ("not confident", ~confident)):
                if sel.any():
                    print(
                        f"{'':12s} {label}: {sel.sum()} pairs, pose error median "
                        f"{np.median(errs[sel]):.2f} deg, < 5 deg {np.mean(errs[sel] < 5):.0%}"
                    )
    print("\ntranslation error against parallax, same-scene and shrunk-baseline pairs together")
    bins = (0.0, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 4.0, np.inf)
    par, err_t = [], []
    for results, gts in rows.values():
        for v, gt in zip(results, gts):
            if gt is not None and v.has_pose:
                par.append(v.parallax_deg)
                err_t.append(float(pose_errors(*(torch.as_tensor(a) for a in (v.R, v.t, *gt)))[1]))
    par, err_t = np.array(par), np.array(err_t)
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (par >= lo) & (par < hi)
        if sel.any():
            print(
                f"parallax [{lo:g}, {hi:g}) deg: {sel.sum():4d} pairs, t error median "
                f"{np.median(err_t[sel]):6.2f} deg, < 10 deg {np.mean(err_t[sel] < 10):4.0%}"
            )
    if args.real_train:
        real_train(args.real_train, args.real_pairs, verifier)


def real_train(root: Path, count: int, verifier: cv.Verifier) -> None:
    """match_images on adjacent images of a collection and on images of two collections."""
    import warnings

    from corrnet.match import MatchError, match_images

    collections = sorted(p for p in root.iterdir() if (p / "images").is_dir())[:count]
    images = [sorted((c / "images").iterdir()) for c in collections]
    runs = {
        "adjacent": [(imgs[0], imgs[1]) for imgs in images],
        "two collections": [
            (images[i][0], images[(i + 1) % len(images)][0]) for i in range(len(images))
        ],
    }
    print(f"\nreal-train ({root}), approximate intrinsics")
    for name, pairs in runs.items():
        values = []
        for a, b in pairs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    r = match_images(a, b, verifier=verifier)
                except MatchError:
                    values.append((0, 0.0, np.nan, False))
                    continue
            values.append((*stats(r.verification), r.confident))
        arr = np.array(values, np.float64)
        print(
            f"{name:16s} {len(pairs)} pairs: inliers min/median/max "
            f"{arr[:, 0].min():.0f}/{np.median(arr[:, 0]):.0f}/{arr[:, 0].max():.0f}, share "
            f"median {np.median(arr[:, 1]):.2f}, parallax median {np.nanmedian(arr[:, 2]):.2f} "
            f"deg, confident {arr[:, 3].mean():.0%}"
        )


if __name__ == "__main__":
    main()
