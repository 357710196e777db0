"""What SIFT measures per match on real photos without poses: the numbers behind the synthetic
generator's ``sizes``, ``angles`` and ``dists`` (docs/channels.md).

    python benchmarks/sift_stats.py [--images ../shared/real-train] [--pairs-per-folder 2]
                                    [--warps-per-folder 1] [--seed 0]

Two measurements on the photos of every ``<folder>/images/`` (consecutive files are
neighbouring views), with the preparation's own SIFT and matching
(:mod:`corrnet.datasets.prepare`):

* warps: an image against itself warped by a random homography H (rotation up to 180°, scale
  0.5-2, mild perspective).  Matches within 1.5 px of H's prediction that are mutual with a
  ratio < 0.8 are true; their log(size2 / size1) and angle2 - angle1 are compared with the
  closed form of H's local affine map (:func:`corrnet.datasets.synthetic.local_similarity`):
  the sign convention and the spread (SIFT's noise) of inliers.
* pairs: image i against image i + 1 (no poses).  Matches with a ratio > 0.9 are mostly
  outliers: the quantiles of their log scale ratio, orientation difference and descriptor
  distances; "likely inliers" (ratio < 0.6 and mutual) for comparison.

Prints quantile tables (1, 5, 10, 25, 50, 75, 90, 95, 99 %).  Reads real-train photos only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from corrnet.datasets.prepare import nearest_neighbours, read_image, sift_features
from corrnet.datasets.synthetic import local_similarity

ROOT = Path(__file__).resolve().parents[1]
QUANTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)


def wrap_degrees(a: np.ndarray) -> np.ndarray:
    """Angles in degrees wrapped to [-180, 180)."""
    return (np.asarray(a) + 180.0) % 360.0 - 180.0


def random_homography(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A homography (3, 3) of a w x h image about its centre: rotation, scale, perspective."""
    c = np.array([[1, 0, (w - 1) / 2], [0, 1, (h - 1) / 2], [0, 0, 1.0]])
    a, s = np.deg2rad(rng.uniform(-180, 180)), np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    A = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0], [0, 0, 1]])
    P = np.eye(3)
    P[2, :2] = rng.normal(0, 2e-4, 2)
    return c @ P @ A @ np.linalg.inv(c)


def warp_residuals(image: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-scale and angle residuals (n,), (n,) degrees of the true matches of image vs H(image)."""
    h, w = image.shape[:2]
    warped = cv2.warpPerspective(image, H, (w, h))
    f1, f2 = sift_features(image), sift_features(warped)
    nn, ratio, mutual, _ = nearest_neighbours(f1.desc, f2.desc)
    p = np.c_[f1.kp, np.ones(len(f1.kp))] @ H.T
    predicted = p[:, :2] / p[:, 2:]
    true = (np.linalg.norm(f2.kp[nn] - predicted, axis=1) < 1.5) & mutual & (ratio < 0.8)
    scale, turn = local_similarity(H, f1.kp[true])
    log_res = np.log(f2.sizes[nn][true] / f1.sizes[true]) - np.log(scale)
    angle_res = wrap_degrees(f2.angles[nn][true] - f1.angles[true] - turn)
    return log_res, angle_res


def pair_measures(a: Path, b: Path) -> dict[str, np.ndarray]:
    """Per-match measures of the nearest-neighbour matches of image a in image b."""
    f1, f2 = (sift_features(read_image(p)) for p in (a, b))
    nn, ratio, mutual, dists = nearest_neighbours(f1.desc, f2.desc)
    return {
        "ratio": ratio,
        "mutual": mutual,
        "size1": f1.sizes,
        "log_scale": np.log(f2.sizes[nn] / f1.sizes),
        "turn": wrap_degrees(f2.angles[nn] - f1.angles),
        "d1": dists[:, 0],
        "d2": dists[:, 1],
    }


def row(name: str, values: np.ndarray) -> str:
    q = np.percentile(values, QUANTILES)
    return f"{name:44s}" + "".join(f"{v:9.3f}" for v in q) + f"{len(values):8d}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "real-train")
    parser.add_argument("--pairs-per-folder", type=int, default=2)
    parser.add_argument("--warps-per-folder", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folders = sorted(p for p in args.images.glob("*/images") if p.is_dir())
    if not folders:
        parser.error(f"{args.images}: no <folder>/images/ found")
    rng = np.random.default_rng(args.seed)
    logs, angles = [], []
    pairs: list[dict[str, np.ndarray]] = []
    for folder in tqdm(folders, desc="folders"):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        for k in range(min(args.warps_per_folder, len(files))):
            image = read_image(files[k])
            H = random_homography(rng, image.shape[1], image.shape[0])
            log_res, angle_res = warp_residuals(image, H)
            logs.append(log_res)
            angles.append(angle_res)
        for k in range(min(args.pairs_per_folder, len(files) - 1)):
            pairs.append(pair_measures(files[k], files[k + 1]))
    cat = {key: np.concatenate([p[key] for p in pairs]) for key in pairs[0]}
    outlier = cat["ratio"] > 0.9
    likely = (cat["ratio"] < 0.6) & cat["mutual"]
    log_res, angle_res = np.concatenate(logs), np.concatenate(angles)
    print(f"{'quantile (%)':44s}" + "".join(f"{q:9d}" for q in QUANTILES) + f"{'count':>8s}")
    print(row("warps: log-scale residual, true matches", log_res))
    print(row("warps: angle residual (deg), true matches", angle_res))
    mad = lambda a: 1.4826 * np.median(np.abs(a - np.median(a)))
    print(
        f"warps: robust std of log-scale {mad(log_res):.4f}, of angle {mad(angle_res):.3f} deg; "
        f"|angle residual| > 20 deg: {100 * np.mean(np.abs(angle_res) > 20):.2f} %"
    )
    for name, mask in (("ratio > 0.9 (outliers)", outlier), ("ratio < 0.6, mutual", likely)):
        print(row(f"pairs {name}: log(size2/size1)", cat["log_scale"][mask]))
        print(row(f"pairs {name}: angle2 - angle1", cat["turn"][mask]))
        print(row(f"pairs {name}: d1", cat["d1"][mask]))
        print(row(f"pairs {name}: d2", cat["d2"][mask]))
        print(row(f"pairs {name}: size1", cat["size1"][mask]))
    print(row("pairs all: size1", cat["size1"]))
    print(row("pairs all: d2", cat["d2"]))
    print(row("pairs all: ratio", cat["ratio"]))


if __name__ == "__main__":
    main()
