"""Two images in, relative pose and a picture out.

    python -m corrnet.match IMG1 IMG2 [--K1 FX FY CX CY] [--K2 FX FY CX CY] --out DIR
                            [--checkpoint F] [--device D] [--threshold PX] [--overwrite] [--no-picture]
    corrnet match ...                       (the same, as the console command)

The pipeline: SIFT and nearest-neighbour matches with ratio and mutual flag exactly as
``data/prepare.py`` computes them (:mod:`corrnet.datasets.prepare`), the network (kept
matches: logit > 0, or the 8 best), then PoseLib (:func:`_estimate`) on the
kept matches.  Writes ``DIR/pose.json`` and ``DIR/matches.png`` (atomically; only pose.json
with ``--no-picture``) and prints one summary line.  K is in pixels, pixel-centre convention
(the centre of the top-left pixel is (0, 0)); the motion is x2 = R x1 + t with |t| = 1.

Without ``--K1`` / ``--K2`` the intrinsics of that image are approximated: the focal length
from the JPEG's EXIF ``FocalLengthIn35mmFilm`` when present (f = f35 * image diagonal / 43.27 mm),
else 1.2 x the larger image side; the principal point at the centre ((w - 1) / 2, (h - 1) / 2).
``pose.json`` then says ``"intrinsics": "approximate"`` and a warning goes to stderr.

Bad input (a missing or non-image file, a bad K, an ``--out`` that already holds a result,
fewer than 8 matches, no pose found) ends with one line ``PROG: error: ...`` and exit
status 2; nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from corrnet.arguments import pixel_threshold
from corrnet.atomic import atomic_path
from corrnet.checkpoint import PRETRAINED, load_model
from corrnet.datasets.oanet_hdf5 import MAX_PIXELS
from corrnet.datasets.prepare import PutativeMatches, putative_matches, read_image, sift_features
from corrnet.datasets.sample import intrinsics
from corrnet.errors import run_command
from corrnet.eval import estimators
from corrnet.eval.evaluate import NETWORK_THREADS, torch_threads
from corrnet.eval.predict import kept_matches
from corrnet.geometry import essential_from_pose
from corrnet.models.inference import make_predictor

DEFAULT_FOCAL_FACTOR = 1.2
"""Focal length without K or EXIF: this times the larger image side, in pixels."""
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
"""Diagonal of the 35 mm film frame that EXIF's 35 mm-equivalent focal length refers to."""
RESULT_FILES = ("pose.json", "matches.png")
STAGES = ("sift", "matching", "network", "estimator", "picture")
"""Timed stages, in ms in ``pose.json``; ``load`` (reading the weights) is timed as well."""


class MatchError(ValueError):
    """No pose for the pair: fewer than 8 matches, or the estimator found none."""


class ApproximateIntrinsicsWarning(UserWarning):
    """An image had no K; its intrinsics were approximated (see :func:`approximate_intrinsics`)."""


@dataclass(frozen=True)
class Estimate:
    """A robust estimate: R (3, 3), unit t (3,), inlier mask (M,) bool over the matches it saw,
    the estimator's name and inlier threshold with its unit.  R, t are NaN when it failed."""

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray
    name: str
    threshold: float
    threshold_unit: str


def _estimate(
    x: np.ndarray, K1: np.ndarray, K2: np.ndarray, threshold_px: float | None = None
) -> Estimate:
    """The pose of the kept matches x (M, 4) normalised; K1, K2 (3, 3) pixels.

    The one place that picks the estimator: PoseLib's LO-RANSAC on pixels, as ``eval.py``'s
    ``corrnet+poselib`` runs it (threshold ``threshold_px``, default 1 px).
    """
    estimator = estimators.PoseLibEstimator(
        max_epipolar_error=estimators.POSELIB_THRESHOLD if threshold_px is None else threshold_px
    )
    R, t, inliers = estimator.estimate(x, K1, K2)
    return Estimate(R, t, inliers, estimator.name, estimator.max_epipolar_error, "px")


@dataclass
class MatchResult:
    """The relative pose of two images and what it was computed from.

    R (3, 3), t (3,) unit, E (3, 3) = [t]x R: the motion x2 = R x1 + t.  K1, K2 (3, 3) pixels;
    ``intrinsics`` per image: "given", "exif" or "default" (1.2 x the larger side).
    N putative matches: uv1, uv2 (N, 2) pixels, xs (N, 4) normalised, ratios (N,),
    mutuals (N,) bool, logits (N,); kept (N,) bool (the network's), inliers (N,) bool (the
    estimator's, a subset of kept).  times_ms: per stage (see :data:`STAGES`).
    """

    image1: Path
    image2: Path
    R: np.ndarray
    t: np.ndarray
    E: np.ndarray
    K1: np.ndarray
    K2: np.ndarray
    intrinsics: dict[str, str]
    uv1: np.ndarray
    uv2: np.ndarray
    xs: np.ndarray
    ratios: np.ndarray
    mutuals: np.ndarray
    logits: np.ndarray
    kept: np.ndarray
    inliers: np.ndarray
    estimator: str
    threshold: float
    threshold_unit: str
    weights: Path
    times_ms: dict[str, float] = field(default_factory=dict)

    @property
    def approximate(self) -> bool:
        """Whether either K was approximated rather than given."""
        return any(v != "given" for v in self.intrinsics.values())

    def to_json(self) -> dict:
        """The content of ``pose.json`` (plain lists and numbers)."""
        return {
            "image1": str(self.image1),
            "image2": str(self.image2),
            "R": self.R.tolist(),
            "t": self.t.tolist(),
            "E": self.E.tolist(),
            "convention": "x2 = R x1 + t (camera 1 to camera 2), |t| = 1; K in pixels, "
            "pixel-centre convention",
            "K1": self.K1.tolist(),
            "K2": self.K2.tolist(),
            "intrinsics": "approximate" if self.approximate else "given",
            "intrinsics_source": self.intrinsics,
            "num_matches": int(len(self.xs)),
            "num_kept": int(self.kept.sum()),
            "num_inliers": int(self.inliers.sum()),
            "kept": np.flatnonzero(self.kept).tolist(),
            "inliers": np.flatnonzero(self.inliers).tolist(),
            "estimator": {
                "name": self.estimator,
                "threshold": self.threshold,
                "threshold_unit": self.threshold_unit,
            },
            "times_ms": {k: round(v, 2) for k, v in self.times_ms.items()},
            "weights": str(self.weights),
        }


def exif_focal_35mm(path: str | Path) -> float | None:
    """EXIF ``FocalLengthIn35mmFilm`` (tag 0xA405) of a JPEG file in mm; None when absent."""
    with open(path, "rb") as f:
        data = f.read(1 << 17)  # APP1 (EXIF) precedes the image data and is at most 64 KiB
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\0\0":
            return _tiff_focal_35mm(data[pos + 10 : pos + 2 + length])
        pos += 2 + length
    return None


def _tiff_focal_35mm(tiff: bytes) -> float | None:
    """FocalLengthIn35mmFilm from the TIFF structure of an EXIF segment (IFD0 -> Exif IFD)."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    try:
        exif_ifd = _ifd_integer(tiff, order, struct.unpack_from(order + "I", tiff, 4)[0], 0x8769)
        value = None if exif_ifd is None else _ifd_integer(tiff, order, exif_ifd, 0xA405)
    except struct.error:  # truncated or corrupt: no EXIF focal length
        return None
    return float(value) if value else None


def _ifd_integer(tiff: bytes, order: str, offset: int, tag: int) -> int | None:
    """The value of the SHORT or LONG entry ``tag`` of the TIFF IFD at ``offset``, or None."""
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    for k in range(count):
        entry = offset + 2 + 12 * k
        entry_tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if entry_tag == tag and kind in (3, 4):
            return struct.unpack_from(order + ("H" if kind == 3 else "I"), tiff, entry + 8)[0]
    return None


def approximate_intrinsics(path: str | Path, width: int, height: int) -> tuple[np.ndarray, str]:
    """K (3, 3) for an image of width x height pixels without calibration, and its source:
    "exif" (35 mm-equivalent focal length) or "default" (1.2 x the larger side)."""
    f35 = exif_focal_35mm(path)
    if f35 is not None:
        focal, source = f35 * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM, "exif"
    else:
        focal, source = DEFAULT_FOCAL_FACTOR * max(width, height), "default"
    return intrinsics(focal, focal, (width - 1) / 2, (height - 1) / 2), source


def as_intrinsics(value: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """K (3, 3) float64 from (fx, fy, cx, cy) or a (3, 3) matrix without skew; ValueError
    naming ``name`` for a wrong count, non-finite numbers or a non-positive focal length."""
    try:
        a = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected 4 numbers FX FY CX CY, got {value!r}") from None
    if a.shape == (3, 3):
        if a[0, 1] != 0 or a[1, 0] != 0 or not np.array_equal(a[2], [0.0, 0.0, 1.0]):
            raise ValueError(
                f"{name}: expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {a.tolist()}"
            )
        a = a[[0, 1, 0, 1], [0, 1, 2, 2]]
    if a.shape != (4,):
        raise ValueError(f"{name}: expected 4 numbers FX FY CX CY (or a 3x3 matrix), got {a.size}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite numbers, got {a.tolist()}")
    if (a[:2] <= 0).any():
        raise ValueError(
            f"{name}: expected positive focal lengths FX FY in pixels, got {a[0]:g} {a[1]:g}"
        )
    if (np.abs(a) > MAX_PIXELS).any():
        raise ValueError(f"{name}: expected |values| <= {MAX_PIXELS:g} pixels, got {a.tolist()}")
    return intrinsics(*a)


def load_image(path: str | Path) -> np.ndarray:
    """The (h, w, 3) uint8 BGR image of a file; FileNotFoundError or ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except PermissionError as err:
        raise ValueError(f"{path}: cannot read the image ({err.strerror})") from None
    return read_image(path)  # ValueError naming the file when OpenCV cannot decode it


def _network_input(matches: PutativeMatches, in_channels: int) -> torch.Tensor:
    """Features (1, N, C) float32: [xs] (C = 4) or [xs, ratio, mutual] (C = 6)."""
    columns = {4: [matches.xs], 6: [matches.xs, matches.ratios[:, None], matches.mutuals[:, None]]}
    if in_channels not in columns:
        raise ValueError(
            f"checkpoint: the network takes {in_channels} channels per match; "
            f"corrnet.match provides 4 (coordinates) or 6 (with ratio and mutual flag)"
        )
    return torch.as_tensor(np.concatenate(columns[in_channels], 1), dtype=torch.float32)[None]


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device: {str(err).splitlines()[0]}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device: expected cpu, cuda or mps, got {device}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {device} requested, but CUDA is not available here")
    return dev


def match_images(
    img1: str | Path,
    img2: str | Path,
    K1: Sequence[float] | np.ndarray | None = None,
    K2: Sequence[float] | np.ndarray | None = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    threshold: float | None = None,
) -> MatchResult:
    """Relative pose of two image files (see the module docstring for the pipeline).

    K1, K2: (fx, fy, cx, cy) or (3, 3) in pixels; None approximates it (with an
    :class:`ApproximateIntrinsicsWarning`).
    checkpoint: corrnet weights (default: the shipped ones).  threshold: the estimator's
    inlier threshold in pixels (None: its default).
    Raises FileNotFoundError / ValueError for bad input, MatchError (a ValueError) when the
    pair has fewer than 8 matches or the estimator finds no pose.
    """
    paths = (Path(img1), Path(img2))
    given = [None if K is None else as_intrinsics(K, f"K{i + 1}") for i, K in enumerate((K1, K2))]
    dev = _device(device)
    times: dict[str, float] = {}
    start = time.perf_counter()
    images = [load_image(p) for p in paths]
    feats = [sift_features(img) for img in images]
    times["sift"] = (time.perf_counter() - start) * 1e3

    Ks, sources = [], {}
    for i, (path, img, K) in enumerate(zip(paths, images, given)):
        name = f"K{i + 1}"
        if K is None:
            K, sources[name] = approximate_intrinsics(path, img.shape[1], img.shape[0])
            what = (
                "EXIF 35 mm focal length"
                if sources[name] == "exif"
                else f"{DEFAULT_FOCAL_FACTOR:g} x the larger image side"
            )
            warnings.warn(
                f"{path}: no {name} given; approximate intrinsics f = {K[0, 0]:.1f} px "
                f"({what}), principal point at the centre ({K[0, 2]:g}, {K[1, 2]:g})",
                ApproximateIntrinsicsWarning,
                stacklevel=2,
            )
        else:
            sources[name] = "given"
        Ks.append(K)

    start = time.perf_counter()
    try:
        matches = putative_matches(*feats, *Ks, "too few matches", paths)
    except ValueError as err:
        raise MatchError(str(err)) from None
    times["matching"] = (time.perf_counter() - start) * 1e3

    weights = Path(checkpoint) if checkpoint is not None else PRETRAINED
    start = time.perf_counter()
    model = load_model(weights, dev)
    times["load"] = (time.perf_counter() - start) * 1e3
    features = _network_input(matches, model.config.in_channels).to(dev)
    with torch_threads(NETWORK_THREADS):  # see NETWORK_THREADS: faster than all cores under load
        start = time.perf_counter()
        logits = make_predictor(model)(features)["logits"][0].double().cpu().numpy()
        times["network"] = (time.perf_counter() - start) * 1e3
    kept = kept_matches(torch.from_numpy(logits)[None])[0].numpy()

    start = time.perf_counter()
    est = _estimate(matches.xs[kept], *Ks, threshold)
    times["estimator"] = (time.perf_counter() - start) * 1e3
    if not (np.isfinite(est.R).all() and np.isfinite(est.t).all()):
        raise MatchError(
            f"{paths[0]}, {paths[1]}: no pose found: the estimator '{est.name}' found "
            f"{int(est.inliers.sum())} inliers among the {int(kept.sum())} kept matches "
            f"(of {len(kept)})"
        )
    inliers = np.zeros(len(kept), bool)
    inliers[np.flatnonzero(kept)[est.inliers]] = True
    R, t = np.asarray(est.R, np.float64), np.asarray(est.t, np.float64).reshape(3)
    t = t / np.linalg.norm(t)
    E = essential_from_pose(torch.from_numpy(R), torch.from_numpy(t)).numpy()
    return MatchResult(
        paths[0],
        paths[1],
        R,
        t,
        E,
        Ks[0],
        Ks[1],
        sources,
        matches.uv1,
        matches.uv2,
        matches.xs,
        matches.ratios,
        matches.mutuals,
        logits,
        kept,
        inliers,
        est.name,
        est.threshold,
        est.threshold_unit,
        weights,
        times,
    )


def check_out_dir(out: str | Path, overwrite: bool = False) -> Path:
    """``out`` as a Path; FileExistsError if it is a file, or holds a result and not ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    existing = [name for name in RESULT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out}: already holds a result ({', '.join(existing)}); choose "
            f"another folder or pass --overwrite"
        )
    return out


def render_matches(result: MatchResult, out_png: str | Path) -> Path:
    """``render_pair`` picture of the pair on its images: kept matches green where the
    estimator calls them inliers, vermilion where it rejects them (no ground truth here)."""
    from corrnet.visualization import render_pair

    title = (
        f"{result.image1.name} - {result.image2.name}: kept matches vs the {result.estimator} "
        f"pose (TP = estimator inlier, FP = rejected)"
    )
    return render_pair(
        out_png,
        result.xs,
        result.inliers,
        result.kept,
        title=title,
        image1=result.image1,
        image2=result.image2,
        K1=result.K1,
        K2=result.K2,
    )


def write_result(
    result: MatchResult, out: str | Path, overwrite: bool = False, picture: bool = True
) -> Path:
    """Render ``out/matches.png`` (timed into ``result.times_ms["picture"]``), then write
    ``out/pose.json``, both atomically (pose.json also when rendering raises RuntimeError).
    ``picture=False`` writes pose.json alone and removes a matches.png of an earlier result
    (after pose.json is written), so that the folder never mixes two results.
    Returns the path of pose.json."""
    out = check_out_dir(out, overwrite)
    start = time.perf_counter()
    try:
        if picture:
            render_matches(result, out / "matches.png")
            result.times_ms["picture"] = (time.perf_counter() - start) * 1e3
    finally:  # the pose is worth keeping when only the picture failed
        with atomic_path(out / "pose.json") as tmp:
            tmp.write_text(json.dumps(result.to_json(), indent=1) + "\n")
    if not picture:
        (out / "matches.png").unlink(missing_ok=True)
    return out / "pose.json"


def summary(result: MatchResult, out: Path) -> str:
    """The one stdout line: counts, rotation angle, t, intrinsics, time, where the files are."""
    angle = math.degrees(math.acos(float(np.clip((np.trace(result.R) - 1) / 2, -1.0, 1.0))))
    total = sum(result.times_ms.get(s, 0.0) for s in STAGES)
    return (
        f"{result.image1.name} {result.image2.name}: {len(result.xs)} matches, "
        f"{int(result.kept.sum())} kept, {int(result.inliers.sum())} inliers ({result.estimator}); "
        f"rotation {angle:.2f} deg, t [{' '.join(f'{v:+.3f}' for v in result.t)}]; intrinsics "
        f"{'approximate' if result.approximate else 'given'}; {total:.0f} ms; {out}"
    )


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are the single line ``PROG: error: MESSAGE`` (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = _Parser(
        prog=prog,
        description="Relative pose of two images: SIFT, corrnet, robust "
        "estimation; writes DIR/pose.json and DIR/matches.png.",
    )
    parser.add_argument("image1", type=Path, metavar="IMG1")
    parser.add_argument("image2", type=Path, metavar="IMG2")
    for i in (1, 2):
        parser.add_argument(
            f"--K{i}",
            type=float,
            nargs=4,
            metavar=("FX", "FY", "CX", "CY"),
            help=f"intrinsics of image {i} in pixels (default: approximated, see docs)",
        )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder for pose.json and matches.png",
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="corrnet weights (default: the shipped ones)"
    )
    parser.add_argument("--device", default="cpu", help="torch device of the network (default cpu)")
    parser.add_argument(
        "--threshold",
        type=pixel_threshold,
        metavar="PX",
        help="estimator inlier threshold in pixels",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a result in --out")
    parser.add_argument(
        "--no-picture",
        dest="picture",
        action="store_false",
        help="write pose.json only (no renderer needed; skips the slowest stage)",
    )
    args = parser.parse_args(argv)
    for i in (1, 2):
        K = getattr(args, f"K{i}")
        if K is not None:
            try:
                as_intrinsics(K, f"--K{i}")
            except ValueError as err:
                parser.error(str(err))
    return args


def main(argv: Sequence[str] | None = None, prog: str = "python -m corrnet.match") -> int:
    """Entry point; returns the exit status (0, 2 for bad input, 1 if only the picture failed)."""
    args = parse_args(argv, prog)

    def run() -> int:
        check_out_dir(args.out, args.overwrite)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ApproximateIntrinsicsWarning)
            result = match_images(
                args.image1,
                args.image2,
                args.K1,
                args.K2,
                args.checkpoint,
                args.device,
                args.threshold,
            )
        for w in caught:
            print(f"{prog}: warning: {w.message}", file=sys.stderr)
        try:
            write_result(result, args.out, args.overwrite, args.picture)
        except (
            RuntimeError
        ) as err:  # the renderer: the environment, not the input; pose.json is written
            print(
                f"{prog}: error: {args.out / 'pose.json'} written, but no picture: {err}",
                file=sys.stderr,
            )
            return 1
        print(summary(result, args.out))
        return 0

    return run_command(prog, run)


if __name__ == "__main__":
    sys.exit(main())
