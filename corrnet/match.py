"""Two images in, relative pose, matches and a picture out.

    python -m corrnet.match IMG1 IMG2 [--K1 FX FY CX CY] [--K2 FX FY CX CY] --out DIR
                            [--checkpoint F] [--device D] [--threshold PX] [--overwrite]
                            [--picture {2d,3d} | --no-picture]
    corrnet match ...                       (the same, as the console command)
    corrnet match --pairs PAIRS.txt --images DIR --out OUT ...   (many pairs: corrnet.pairs)

The pipeline: SIFT (or ORB / AKAZE with ``--detector``) and nearest-neighbour matches with
ratio and mutual flag exactly as ``data/prepare.py`` computes them
(:mod:`corrnet.datasets.prepare`), then
:class:`corrnet.verifier.Verifier`: the network (kept matches: logit > 0, or the 8 best) and
PoseLib on the kept matches.  Writes ``DIR/pose.json`` (the pose, its confidence and
warnings), ``DIR/matches.npz`` (every match: :data:`MATCHES_KEYS`, row i = match i, the
indices of pose.json's ``kept`` and ``inliers``) and ``DIR/matches.png`` (the images side by
side with the kept matches; ``--picture 3d`` the Open3D picture; none with
``--no-picture``), each atomically, and prints one summary line.  K is in pixels,
pixel-centre convention (the centre of the top-left pixel is (0, 0)); the motion is
x2 = R x1 + t with |t| = 1.  A pose that is not confident (too few inliers, most kept
matches rejected, no parallax; see :mod:`corrnet.verifier`) is written all the same, with
``"confident": false`` and its ``warnings`` in pose.json and one warning line on stderr.

Without ``--K1`` / ``--K2`` the intrinsics of that image are approximated: the focal length
from the JPEG's EXIF ``FocalLengthIn35mmFilm`` when present and within 8-2000 mm
(f = f35 * image diagonal / 43.27 mm), else 1.2 x the larger image side (a value outside that
range, such as 1 mm or 65535 mm, is ignored with a warning naming the image and the value);
the principal point at the centre ((w - 1) / 2, (h - 1) / 2).
``pose.json`` then says ``"intrinsics": "approximate"`` and a warning goes to stderr.

Bad input (a missing or non-image file, a bad K, an ``--out`` that already holds a result,
fewer than 8 matches, no pose found) ends with one line ``PROG: error: ...`` and exit
status 2; nothing is written then.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from corrnet.arguments import add_detector, add_keypoint_count, pixel_threshold
from corrnet.atomic import NotRegularFileError, atomic_path, check_regular_output, temporary_folder
from corrnet.constants import DEFAULT_DETECTOR, NUM_FEATURES
from corrnet.errors import UserError, run_command
from corrnet.images import exif_focal_35mm, read_image

if TYPE_CHECKING:  # imported where used, so that --help needs neither torch nor OpenCV
    import torch

    from corrnet.verifier import Verification, Verifier

Image = str | Path | np.ndarray
"""An image file, or a uint8 array (h, w) grey or (h, w, 3) BGR."""

DEFAULT_FOCAL_FACTOR = 1.2
"""Focal length without K or EXIF: this times the larger image side, in pixels."""
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
"""Diagonal of the 35 mm film frame that EXIF's 35 mm-equivalent focal length refers to."""
EXIF_FOCAL_RANGE_MM = (8.0, 2000.0)
"""35 mm-equivalent focal lengths taken from EXIF: a diagonal field of view from 139 degrees
(a fisheye) to 1.2 degrees (a long telephoto); others (1 mm, 65535 mm) are a camera's or an
editor's error and fall back to the default, with a warning."""
MATCHES_FILE = "matches.npz"
"""The matches of a result, beside ``pose.json`` (keys :data:`MATCHES_KEYS`)."""
MATCHES_KEYS = ("kpts1", "kpts2", "scores", "logits", "kept", "inliers", "ratios", "mutuals")
RESULT_FILES = ("pose.json", MATCHES_FILE, "matches.png")
PICTURES = ("2d", "3d")
"""``--picture``: the OpenCV overlay (default) or the Open3D picture."""
STAGES = ("sift", "matching", "network", "estimator", "picture")
"""Timed stages, in ms in ``pose.json``; ``load`` (reading the weights) is timed as well."""


def __getattr__(name: str) -> Any:
    """``as_intrinsics``: :func:`corrnet.verifier.as_intrinsics`, importable from here as well,
    imported on first use (this module imports torch only where it needs it)."""
    if name == "as_intrinsics":
        from corrnet.verifier import as_intrinsics

        return as_intrinsics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class MatchError(UserError):
    """No pose for the pair: fewer than 8 matches, or the estimator found none."""


class ApproximateIntrinsicsWarning(UserWarning):
    """An image had no K; its intrinsics were approximated (see :func:`approximate_intrinsics`)."""


@dataclass
class MatchResult:
    """The relative pose of two images and what it was computed from.

    ``verification`` (:class:`corrnet.verifier.Verification`) holds the pose (R, t, E), the
    matches (kpts1, kpts2 pixels, xs normalised, N each), the network's logits, scores and
    kept matches, the estimator's inliers, ``confident`` and ``warnings``; its fields are
    also readable here (``result.R``, ``result.inliers``, ...).  image1, image2: the files, or
    None for an image given as an array; images: the two BGR images (h, w, 3) uint8.
    ``intrinsics`` per image: "given", "exif" or "default" (1.2 x the larger side).
    ratios (N,), mutuals (N,) bool: the matches' side information.  weights: the file of the
    weights that scored the matches.  times_ms: per stage (see :data:`STAGES`; ``sift`` is
    the detector's, whichever it is).  detector: the keypoints' detector
    (:data:`corrnet.constants.DETECTORS`).
    """

    image1: Path | None
    image2: Path | None
    images: tuple[np.ndarray, np.ndarray] = field(repr=False)
    verification: Verification
    intrinsics: dict[str, str]
    ratios: np.ndarray
    mutuals: np.ndarray
    weights: Path
    times_ms: dict[str, float] = field(default_factory=dict)
    detector: str = DEFAULT_DETECTOR

    def __getattr__(self, name: str) -> Any:
        if name != "verification" and "verification" in self.__dict__:
            return getattr(self.verification, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def uv1(self) -> np.ndarray:
        """(N, 2) pixels of the matches in image 1 (``verification.kpts1``)."""
        return self.verification.kpts1

    @property
    def uv2(self) -> np.ndarray:
        """(N, 2) pixels of the matches in image 2 (``verification.kpts2``)."""
        return self.verification.kpts2

    @property
    def approximate(self) -> bool:
        """Whether either K was approximated rather than given."""
        return any(v != "given" for v in self.intrinsics.values())

    def names(self) -> tuple[str, str]:
        """The images' file names (``<array>`` for an image given as an array)."""
        return tuple("<array>" if p is None else p.name for p in (self.image1, self.image2))

    def to_json(self) -> dict:
        """The content of ``pose.json`` (plain lists and numbers)."""
        v = self.verification
        return {
            "image1": None if self.image1 is None else str(self.image1),
            "image2": None if self.image2 is None else str(self.image2),
            "R": v.R.tolist() if v.has_pose else None,
            "t": v.t.tolist() if v.translation_known else None,
            "E": v.E.tolist() if v.translation_known else None,
            "convention": "x2 = R x1 + t (camera 1 to camera 2), |t| = 1 (null when undefined); "
            "K in pixels, pixel-centre convention",
            "K1": v.K1.tolist(),
            "K2": v.K2.tolist(),
            "intrinsics": "approximate" if self.approximate else "given",
            "intrinsics_source": self.intrinsics,
            "confident": v.confident,
            "warnings": list(v.warnings),
            "parallax_deg": v.parallax_deg,
            "num_matches": int(len(v.xs)),
            "num_kept": v.num_kept,
            "num_inliers": v.num_inliers,
            "matches": MATCHES_FILE,
            "kept": np.flatnonzero(v.kept).tolist(),
            "inliers": np.flatnonzero(v.inliers).tolist(),
            "estimator": {
                "name": v.estimator,
                "threshold": v.threshold,
                "threshold_unit": v.threshold_unit,
            },
            "times_ms": {k: round(ms, 2) for k, ms in self.times_ms.items()},
            "weights": str(self.weights),
            "detector": self.detector,
        }

    def matches_arrays(self) -> dict[str, np.ndarray]:
        """The content of ``matches.npz`` (:data:`MATCHES_KEYS`), row i = match i."""
        v = self.verification
        return {
            "kpts1": v.kpts1,
            "kpts2": v.kpts2,
            "scores": v.scores,
            "logits": v.logits,
            "kept": v.kept,
            "inliers": v.inliers,
            "ratios": self.ratios,
            "mutuals": self.mutuals,
        }


def _diagonal_fov_deg(f35: float) -> float:
    """Diagonal field of view in degrees of a 35 mm-equivalent focal length in mm."""
    return math.degrees(2 * math.atan(FULL_FRAME_DIAGONAL_MM / (2 * f35)))


def approximate_intrinsics(
    path: str | Path | None, width: int, height: int
) -> tuple[np.ndarray, str]:
    """K (3, 3) for an image of width x height pixels without calibration, and its source:
    "exif" (35 mm-equivalent focal length of the file ``path``, within
    :data:`EXIF_FOCAL_RANGE_MM`) or "default" (1.2 x the larger side; always for ``path``
    None, an image given as an array, and with an :class:`ApproximateIntrinsicsWarning` for an
    EXIF focal length outside the range)."""
    from corrnet.datasets.sample import intrinsics

    f35 = None if path is None else exif_focal_35mm(path)
    low, high = EXIF_FOCAL_RANGE_MM
    if f35 is not None and not low <= f35 <= high:
        warnings.warn(
            f"{path}: EXIF FocalLengthIn35mmFilm {f35:g} mm is outside [{low:g}, {high:g}] mm "
            f"(a diagonal field of view of {_diagonal_fov_deg(high):.1f} to "
            f"{_diagonal_fov_deg(low):.0f} degrees); ignored",
            ApproximateIntrinsicsWarning,
            stacklevel=2,
        )
        f35 = None
    if f35 is not None:
        focal, source = f35 * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM, "exif"
    else:
        focal, source = DEFAULT_FOCAL_FACTOR * max(width, height), "default"
    return intrinsics(focal, focal, (width - 1) / 2, (height - 1) / 2), source


def as_image(image: Image, name: str) -> tuple[np.ndarray, Path | None]:
    """The (h, w, 3) uint8 BGR image of a file or an array, and the file (None for an array).

    An array is (h, w) grey or (h, w, 3) in OpenCV's BGR order (as ``cv2.imread`` gives),
    uint8; ValueError naming ``name`` otherwise."""
    import cv2

    if isinstance(image, str | Path):
        return read_image(image), Path(image)
    a = np.asarray(image)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise UserError(
            f"{name}: expected an image file or a uint8 array (H, W) or (H, W, 3) BGR, "
            f"got {a.dtype} {a.shape}"
        )
    if min(a.shape[:2]) < 1:
        raise UserError(f"{name}: expected a non-empty image, got shape {a.shape}")
    return (cv2.cvtColor(a, cv2.COLOR_GRAY2BGR) if a.ndim == 2 else a), None


@functools.lru_cache(maxsize=4)
def default_verifier(checkpoint: Path | None = None, device: str = "cpu") -> Verifier:
    """The :class:`Verifier` of ``checkpoint`` on ``device``, loaded once per process (the
    four most recent)."""
    from corrnet.verifier import Verifier

    return Verifier(checkpoint, device)


def match_images(
    img1: Image,
    img2: Image,
    K1: Sequence[float] | np.ndarray | None = None,
    K2: Sequence[float] | np.ndarray | None = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    threshold: float | None = None,
    verifier: Verifier | None = None,
    num_features: int = NUM_FEATURES,
    detector: str = DEFAULT_DETECTOR,
) -> MatchResult:
    """Relative pose of two images: keypoints, nearest-neighbour matches, :class:`Verifier`.

    img1, img2: image files or uint8 arrays (h, w) grey or (h, w, 3) BGR.
    K1, K2: (fx, fy, cx, cy) or (3, 3) in pixels; None approximates it (with an
    :class:`ApproximateIntrinsicsWarning`).
    verifier: the network and estimator to use; default the one of ``checkpoint`` (default:
    the shipped weights) on ``device``, loaded on the first call and reused after.
    threshold: the estimator's inlier threshold in pixels (None: the verifier's).
    num_features: keypoints per image (default 2000, OANet's protocol, which the shipped
    weights were trained at).  detector: ``"sift"`` (default), ``"orb"`` or ``"akaze"``
    (:func:`corrnet.datasets.prepare.detect_features`); with the default weights, ORB and
    AKAZE matches are verified without their ratios by the ratio-free weights
    (:data:`corrnet.checkpoint.PRETRAINED_RATIO_FREE`), whose ``result.weights`` names them.
    Raises FileNotFoundError / ValueError for bad input, MatchError (a ValueError) when the
    pair has fewer than 8 matches or the estimator finds no pose.  A pose that is not to be
    trusted (``result.confident`` False) is returned with its reasons in ``result.warnings``.
    """
    from corrnet.datasets.prepare import detect_features, putative_matches, usable_detector
    from corrnet.verifier import as_device, as_intrinsics

    if verifier is not None and checkpoint is not None:
        raise UserError("checkpoint: expected either a checkpoint or a verifier, got both")
    usable_detector(detector)
    given = [None if K is None else as_intrinsics(K, f"K{i + 1}") for i, K in enumerate((K1, K2))]
    times: dict[str, float] = {}
    if verifier is None:
        misses = default_verifier.cache_info().misses
        weights = None if checkpoint is None else Path(checkpoint)
        verifier = default_verifier(weights, str(as_device(device)))
        if default_verifier.cache_info().misses > misses:  # loaded by this call
            times["load"] = verifier.load_ms
    verifier = verifier.with_threshold(threshold)
    start = time.perf_counter()
    (image1, path1), (image2, path2) = as_image(img1, "img1"), as_image(img2, "img2")
    paths, images = (path1, path2), (image1, image2)
    feats = [detect_features(img, num_features, detector) for img in images]
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
                f"{path or f'img{i + 1}'}: no {name} given; approximate intrinsics "
                f"f = {K[0, 0]:.1f} px ({what}), principal point at the centre "
                f"({K[0, 2]:g}, {K[1, 2]:g})",
                ApproximateIntrinsicsWarning,
                stacklevel=2,
            )
        else:
            sources[name] = "given"
        Ks.append(K)

    start = time.perf_counter()
    names = tuple(p or f"img{i + 1}" for i, p in enumerate(paths))
    try:
        matches = putative_matches(*feats, *Ks, "too few matches", names)
    except ValueError as err:
        raise MatchError(str(err)) from None
    times["matching"] = (time.perf_counter() - start) * 1e3

    measured = matches.measurements(passes_ratios(detector, verifier))
    v = verifier.verify(matches.uv1, matches.uv2, *Ks, **measured)
    times.update(v.times_ms)
    if not v.has_pose:
        raise MatchError(
            f"{names[0]}, {names[1]}: no pose found: the estimator '{v.estimator}' found "
            f"{v.num_inliers} inliers among the {v.num_kept} kept matches (of {len(v.kept)})"
        )
    return MatchResult(
        path1,
        path2,
        images,
        v,
        sources,
        matches.ratios,
        matches.mutuals,
        v.weights,
        times,
        detector,
    )


def passes_ratios(detector: str, verifier: Verifier) -> bool:
    """Whether the matches of ``detector`` go to ``verifier`` with their ratios, mutual flags
    and distances: always, but to the default weights (``verifier.automatic``) for SIFT only,
    so that they verify ORB and AKAZE matches with the ratio-free weights (the shipped ratio
    weights know the distribution of SIFT's ratios only)."""
    return detector == DEFAULT_DETECTOR or not verifier.automatic


def check_out_dir(out: str | Path, overwrite: bool = False) -> Path:
    """``out`` as a Path; FileExistsError if it is a file, or holds a result and not
    ``overwrite``; NotRegularFileError for a dangling link or a loop of links, or a result
    file that is not a regular one (checked before any work)."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise NotRegularFileError(
            f"{out}: a symbolic link to a missing folder or a loop of links; expected a folder "
            "or a new path"
        )
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    for name in RESULT_FILES:
        check_regular_output(out / name)
    existing = [name for name in RESULT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out}: already holds a result ({', '.join(existing)}); choose "
            f"another folder or pass --overwrite"
        )
    return out


def render_matches(result: MatchResult, out_png: str | Path, picture: str = "2d") -> Path:
    """The picture of the pair: ``"2d"`` the OpenCV overlay
    (:func:`corrnet.visualization.overlay.draw_matches`), ``"3d"`` Open3D's ``render_pair``:
    kept matches, green where the estimator calls them inliers, vermilion where it rejects
    them (no ground truth here)."""
    v = result.verification
    if picture == "2d":
        from corrnet.visualization.overlay import draw_matches

        return draw_matches(
            out_png, *result.images, v.kpts1, v.kpts2, v.kept, v.inliers, title=result.names()
        )
    from corrnet.visualization import render_pair

    name1, name2 = result.names()
    title = (
        f"{name1} - {name2}: kept matches vs the {v.estimator} "
        f"pose (TP = estimator inlier, FP = rejected)"
    )
    import cv2

    with temporary_folder("corrnet-match-") as tmp:
        files = []
        for i, (path, image) in enumerate(zip((result.image1, result.image2), result.images)):
            if path is None:  # an array: the renderer reads files
                path = Path(tmp, f"image{i + 1}.png")
                cv2.imwrite(str(path), image)
            files.append(path)
        return render_pair(
            out_png,
            v.xs,
            v.inliers,
            v.kept,
            title=title,
            image1=files[0],
            image2=files[1],
            K1=v.K1,
            K2=v.K2,
        )


def write_result(
    result: MatchResult,
    out: str | Path,
    overwrite: bool = False,
    picture: str | bool | None = "2d",
) -> Path:
    """Render ``out/matches.png`` (``picture`` "2d" or "3d", see :func:`render_matches`;
    True means "2d", False None; timed into ``result.times_ms["picture"]``), then write
    ``out/matches.npz`` and ``out/pose.json``, each atomically (both also when rendering
    raises RuntimeError).
    Without a picture of this result (``picture=None``, or rendering failed) a matches.png of
    an earlier result is removed after pose.json is written, so that the folder never mixes
    two results.
    Returns the path of pose.json."""
    if isinstance(picture, bool):  # True / False: the default picture / none
        picture = PICTURES[0] if picture else None
    if picture is not None and picture not in PICTURES:
        raise UserError(f"picture: expected one of {PICTURES} or None, got {picture!r}")
    out = check_out_dir(out, overwrite)
    start = time.perf_counter()
    drawn = False
    try:
        if picture is not None:
            render_matches(result, out / "matches.png", picture)
            result.times_ms["picture"] = (time.perf_counter() - start) * 1e3
            drawn = True
    finally:  # the pose is worth keeping when only the picture failed
        with atomic_path(out / MATCHES_FILE, suffix=".tmp.npz") as tmp:
            np.savez(tmp, **result.matches_arrays())
        with atomic_path(out / "pose.json") as tmp:
            tmp.write_text(json.dumps(result.to_json(), indent=1) + "\n")
        if not drawn:  # an earlier result's picture would not match this result
            (out / "matches.png").unlink(missing_ok=True)
    return out / "pose.json"


def summary(result: MatchResult, out: Path) -> str:
    """The one stdout line: counts, rotation angle, t (or "undefined"), intrinsics, time, where
    the files are."""
    v = result.verification
    angle = math.degrees(math.acos(float(np.clip((np.trace(v.R) - 1) / 2, -1.0, 1.0))))
    t = f"[{' '.join(f'{x:+.3f}' for x in v.t)}]" if v.translation_known else "undefined"
    total = sum(result.times_ms.get(s, 0.0) for s in STAGES)
    name1, name2 = result.names()
    return (
        f"{name1} {name2}: {len(v.xs)} matches, "
        f"{v.num_kept} kept, {v.num_inliers} inliers ({v.estimator}); "
        f"rotation {angle:.2f} deg, t {t}; intrinsics "
        f"{'approximate' if result.approximate else 'given'}; "
        f"{'confident' if v.confident else 'NOT confident'}; {total:.0f} ms; {out}"
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
        "estimation; writes DIR/pose.json, DIR/matches.npz and DIR/matches.png.",
        epilog=f"Many pairs: {prog} --pairs PAIRS.txt --images DIR --out OUT [...] runs the "
        f"pairs mode ({prog} --pairs PAIRS.txt --help lists its options).",
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
        help="folder for pose.json, matches.npz and matches.png",
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
    add_keypoint_count(parser)
    add_detector(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace a result in --out")
    pictures = parser.add_mutually_exclusive_group()
    pictures.add_argument(
        "--picture",
        choices=PICTURES,
        default="2d",
        help="matches.png: 2d, the images side by side with the kept matches (OpenCV, fast; "
        "default), or 3d, the Open3D picture (needs a Vulkan renderer)",
    )
    pictures.add_argument(
        "--no-picture",
        dest="picture",
        action="store_const",
        const=None,
        help="write pose.json and matches.npz only",
    )
    args = parser.parse_args(argv)
    from corrnet.verifier import as_device, as_intrinsics

    for i in (1, 2):
        K = getattr(args, f"K{i}")
        if K is not None:
            try:
                as_intrinsics(K, f"--K{i}")
            except ValueError as err:
                parser.error(str(err))
    try:
        as_device(args.device)
    except ValueError as err:
        parser.error(f"--{err}")
    return args


def main(argv: Sequence[str] | None = None, prog: str = "python -m corrnet.match") -> int:
    """Entry point; returns the exit status (0, 2 for bad input, 1 if only the picture failed).

    A pose that is not confident is written with exit status 0 and one warning line on stderr
    naming the causes.  With ``--pairs``: :func:`corrnet.pairs.main` (many pairs)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--pairs" or a.startswith("--pairs=") for a in argv):
        from corrnet.pairs import main as pairs_main

        return pairs_main(argv, prog)
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
                num_features=args.num_features,
                detector=args.detector,
            )
        for w in caught:
            print(f"{prog}: warning: {w.message}", file=sys.stderr)
        if not result.confident:
            print(
                f"{prog}: warning: pose not confident: {'; '.join(result.warnings)}",
                file=sys.stderr,
            )
        try:
            write_result(result, args.out, args.overwrite, args.picture)
        except RuntimeError as err:  # the renderer: the environment, not the input
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
