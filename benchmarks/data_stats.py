"""What the network sees, side by side: real pairs (OANet HDF5 files) and the synthetic generator.

    python benchmarks/data_stats.py --hdf5 /work/data/real-dev.hdf5 [MORE.hdf5 ...] \\
        [--synthetic 300] [--modes mixed outdoor indoor] [--seed 0]
One column per HDF5 file and per synthetic mode; rows are the statistics below (inliers are
ys < 1e-4, coordinates normalised, so 0.01 is about 10 px at f = 1000 px):

* inlier %: per pair, quantiles over pairs;
* Lowe ratio and mutual-NN flag of inliers and of outliers, and how well each separates them
  (ROC AUC of -ratio, of the mutual flag);
* near misses: share of outliers with ys below 1e-3 / 1e-2 (10x / 100x the inlier threshold);
* duplicates: share of matches that repeat another match exactly (OpenCV's SIFT gives a
  keypoint one entry per dominant orientation), and many-to-one: share of matches whose
  image-2 point is also the image-2 point of a match from another image-1 point;
* clustering in image 1: the Clark-Evans index of the outliers' distinct x1 (mean
  nearest-neighbour distance over that of uniform points in their bounding box; < 1
  clustered, 1 uniform);
* coherent outliers (4-D): share of outliers whose nearest outlier in image 1 (within 0.05)
  has a motion x2 - x1 within 0.01 of theirs: structured outliers (repeated structure, a
  wrong motion) rather than random ones; the same for inliers for scale;
* what SIFT measured (files with ``sizes``, ``angles``, ``dists``; else nan): per match the
  deviation of log(size2 / size1) and of angle2 - angle1 (degrees, wrapped) from the pair's
  median over its matches with ratio < 0.8 (the pair's own zoom and turn, found without
  labels), its median for inliers and outliers and the ROC AUC of minus it as an inlier
  score; the same for the nearest descriptor distance (AUC of minus it).
Real-dev is for measurement only: this script reads it, nothing trains on it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from corrnet.datasets import OANetPairs
from corrnet.datasets.synthetic import MODES, SyntheticPairs
from corrnet.models.graph_stats import roc_auc

NEIGHBOUR_RADIUS = 0.05
MOTION_TOLERANCE = 0.01


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC of a score (higher = positive), ties counted half: :func:`roc_auc` of pos vs neg."""
    return roc_auc(np.concatenate([pos, neg]), np.arange(len(pos) + len(neg)) < len(pos))


def _nearest(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest point of each row of p (n, 2) at another place: (distance (n,), index (n,))."""
    d = ((p[:, None] - p[None]) ** 2).sum(-1)
    d[d < 1e-18] = np.inf
    j = d.argmin(1)
    return np.sqrt(d[np.arange(len(p)), j]), j


def pair_stats(xs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Per-pair statistics: Clark-Evans index of outliers, coherent shares, many-to-one flags."""
    out: dict[str, float] = {}

    def repeated(a: np.ndarray) -> np.ndarray:
        _, inverse, counts = np.unique(
            np.round(a, 6), axis=0, return_inverse=True, return_counts=True
        )
        return counts[inverse.reshape(-1)] > 1

    dup = repeated(xs)
    first = np.unique(np.round(xs, 6), axis=0, return_index=True)[1]
    distinct = np.zeros(len(xs), bool)
    distinct[first] = True
    many = np.zeros(len(xs), bool)
    many[distinct] = repeated(xs[distinct, 2:])
    for name, mask in (("in", labels), ("out", ~labels)):
        out[f"dup_{name}"] = dup[mask].mean() if mask.any() else np.nan
        out[f"many_{name}"] = many[mask & distinct].mean() if (mask & distinct).any() else np.nan
    for name, mask in (("out", ~labels), ("in", labels)):
        mask = mask & distinct
        p, motion = xs[mask, :2], xs[mask, 2:] - xs[mask, :2]
        if len(p) < 3:
            out[f"ce_{name}"] = out[f"coh_{name}"] = np.nan
            continue
        dist, j = _nearest(p)
        area = np.prod(np.maximum(p.max(0) - p.min(0), 1e-9))
        out[f"ce_{name}"] = dist.mean() / (0.5 * np.sqrt(area / len(p)))
        close = dist < NEIGHBOUR_RADIUS
        same = np.linalg.norm(motion - motion[j], axis=1) < MOTION_TOLERANCE
        out[f"coh_{name}"] = (close & same).mean()
    return out


def wrap_degrees(a: np.ndarray) -> np.ndarray:
    """Angles in degrees wrapped to [-180, 180)."""
    return (np.asarray(a) + 180.0) % 360.0 - 180.0


def sift_deviations(s: dict) -> dict[str, np.ndarray] | None:
    """Per match of a sample with ``sizes``/``angles``/``dists`` (None without them): |log scale
    ratio| and |orientation difference| (degrees) off the pair's median over its matches with
    ratio < 0.8 (all matches when fewer than 8 have), and the nearest descriptor distance."""
    if not all(k in s for k in ("sizes", "angles", "dists")):
        return None
    sizes, angles, dists = (s[k].double().numpy() for k in ("sizes", "angles", "dists"))
    log_scale = np.log(sizes[:, 1] / sizes[:, 0])
    turn = wrap_degrees(angles[:, 1] - angles[:, 0])
    good = s["ratios"].numpy() < 0.8
    ref = good if good.sum() >= 8 else np.ones_like(good)
    centre = np.degrees(np.angle(np.exp(1j * np.radians(turn[ref])).mean()))  # circular mean
    centre += np.median(wrap_degrees(turn[ref] - centre))
    return {
        "scale": np.abs(log_scale - np.median(log_scale[ref])),
        "turn": np.abs(wrap_degrees(turn - centre)),
        "d1": dists[:, 0],
    }


def sift_stats(devs: list[tuple[dict[str, np.ndarray], np.ndarray]]) -> dict[str, float]:
    """Rows of the SIFT measurements: medians for inliers and outliers and AUCs (nan without)."""
    rows = {}
    names = {"scale": "|log scale| off", "turn": "|turn| off (deg)", "d1": "nearest dist"}
    for key, name in names.items():
        if devs:
            pos = np.concatenate([d[key][lab] for d, lab in devs])
            neg = np.concatenate([d[key][~lab] for d, lab in devs])
            rows |= {
                f"{name}: inliers": np.median(pos),
                f"{name}: outliers": np.median(neg),
                f"{name} AUC": auc(-pos, -neg),
            }
        else:
            rows |= {f"{name}: inliers": np.nan, f"{name}: outliers": np.nan, f"{name} AUC": np.nan}
    return rows


def collect(samples: Iterable[dict], total: int, desc: str) -> dict[str, float]:
    """All statistics of one source (a column)."""
    inlier_pct, per_pair, devs = [], [], []
    ratio_in, ratio_out, mutual_in, mutual_out, ys_out = [], [], [], [], []
    n_matches = []
    for s in tqdm(samples, total=total, desc=desc, leave=False):
        xs = s["xs"].double().numpy()
        labels = s["labels"].numpy() > 0.5
        ys, ratios, mutuals = (s[k].double().numpy() for k in ("ys", "ratios", "mutuals"))
        n_matches.append(len(xs))
        inlier_pct.append(100 * labels.mean())
        ratio_in.append(ratios[labels])
        ratio_out.append(ratios[~labels])
        mutual_in.append(mutuals[labels])
        mutual_out.append(mutuals[~labels])
        ys_out.append(ys[~labels])
        per_pair.append(pair_stats(xs, labels))
        dev = sift_deviations(s)
        if dev is not None:
            devs.append((dev, labels))
    cat = np.concatenate
    r_in, r_out, m_in, m_out, y_out = (
        cat(ratio_in),
        cat(ratio_out),
        cat(mutual_in),
        cat(mutual_out),
        cat(ys_out),
    )
    q = np.percentile(inlier_pct, [10, 25, 50, 75, 90])
    pp = {k: np.nanmedian([p[k] for p in per_pair]) for k in per_pair[0]}
    return {
        "pairs": len(inlier_pct),
        "matches/pair (median)": np.median(n_matches),
        "inlier % p10": q[0],
        "inlier % p25": q[1],
        "inlier % median": q[2],
        "inlier % p75": q[3],
        "inlier % p90": q[4],
        "pairs < 5 % inliers (%)": 100 * np.mean(np.array(inlier_pct) < 5),
        "ratio median, inliers": np.median(r_in),
        "ratio median, outliers": np.median(r_out),
        "ratio < 0.8: inliers %": 100 * np.mean(r_in < 0.8),
        "ratio < 0.8: outliers %": 100 * np.mean(r_out < 0.8),
        "ratio AUC (in vs out)": auc(-r_in, -r_out),
        "mutual: inliers %": 100 * m_in.mean(),
        "mutual: outliers %": 100 * m_out.mean(),
        "mutual AUC": auc(m_in, m_out),
        "outliers ys < 1e-3 %": 100 * np.mean(y_out < 1e-3),
        "outliers ys < 1e-2 %": 100 * np.mean(y_out < 1e-2),
        "duplicates: inliers %": 100 * pp["dup_in"],
        "duplicates: outliers %": 100 * pp["dup_out"],
        "many-to-one: inliers %": 100 * pp["many_in"],
        "many-to-one: outliers %": 100 * pp["many_out"],
        "Clark-Evans x1: outliers": pp["ce_out"],
        "Clark-Evans x1: inliers": pp["ce_in"],
        "coherent: outliers %": 100 * pp["coh_out"],
        "coherent: inliers %": 100 * pp["coh_in"],
        **sift_stats(devs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--hdf5", type=Path, nargs="*", default=[], help="OANet-layout files (one column each)"
    )
    parser.add_argument(
        "--synthetic", type=int, default=300, help="synthetic pairs per mode (0: none)"
    )
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=["mixed"], help="synthetic modes"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic pairs")
    args = parser.parse_args(argv)
    columns: dict[str, dict[str, float]] = {}
    for path in args.hdf5:
        if not path.is_file():
            parser.error(f"{path}: HDF5 file not found")
        try:  # side_info: the ratio and mutual statistics need those groups, not zeros instead
            data = OANetPairs(path, side_info=True, on_bad="skip")
        except ValueError as error:
            parser.error(str(error))
        columns[path.stem] = collect((data[i] for i in range(len(data))), len(data), path.name)
    if args.synthetic > 0:
        for mode in args.modes:
            data = SyntheticPairs(args.synthetic, args.seed, mode)
            columns[f"syn-{mode}"] = collect((data[i] for i in range(len(data))), len(data), mode)
    if not columns:
        parser.error("nothing to measure: give --hdf5 files or --synthetic > 0")
    names = list(columns)
    width = max(12, *(len(n) + 2 for n in names))
    print(f"{'statistic':32s}" + "".join(f"{n:>{width}s}" for n in names))
    for row in columns[names[0]]:
        cells = "".join(
            f"{columns[n][row]:>{width}.{0 if row in ('pairs',) else 2}f}" for n in names
        )
        print(f"{row:32s}{cells}")


if __name__ == "__main__":
    main()
