"""Putative matches with ground-truth labels from real images (OANet's SIFT protocol).

Protocol (OANet ``dump_match``): ``cv2.SIFT_create(nfeatures=K, contrastThreshold=1e-5)``
on the colour image with K = 2000 keypoints by default (``num_features``), OpenCV's keypoint
order (strongest first, at most K); for every keypoint of image 1 its L2 nearest neighbour in
image 2, recording the ratio d1/d2 and the mutual-NN flag without filtering; labels by
symmetric epipolar distance < 1e-4 under the GT pose.  Pairs with |t| < 1e-5 are dropped.
Beside OANet's keys every match keeps what SIFT measured (``sizes``, ``angles``: the two
keypoints' ``cv2.KeyPoint.size`` and ``.angle``; ``dists``: the nearest and second-nearest
descriptor distances; see docs/channels.md).  The keypoint count is part of the protocol
(file attribute ``corrnet_protocol``, the cache names, :func:`inputs_digest`), so
preparations with different counts never mix.

Other detectors (``detector``, :data:`~corrnet.constants.DETECTORS`; :func:`detect_features`):
``cv2.ORB_create(nfeatures=K)`` in OpenCV's order, or ``cv2.AKAZE_create()`` keeping the K
strongest keypoints by response; their binary descriptors are matched by Hamming distance
(OpenCV's ``NORM_HAMMING``) with the same ratio, mutual flag and ``dists``, whose
distributions differ from SIFT's (docs/verifier.md, Other detectors).  The detector is part of
the protocol as well (and of the file attribute ``detector``); SIFT's protocol is unchanged.

Inputs: OANet's raw layout ``<seq>/test/{images,calibration,visibility,pairs}.txt`` with
``calibration/calibration_<name>.h5`` (K with principal point *offset from the image centre*,
world-to-camera R, T, imsize), or a plain JSON pairs file (see :func:`read_pairs_file`).

Work is cached per image (features) and per pair (matches) in ``<out>.partial/``, keyed by
the content of the images and the pair's ground truth, so an interrupted run resumes where it
stopped; the output is written to a temporary file and renamed, and the cache is removed once
the output is complete.  Temporary files of a killed run are removed by the next one.  The
output records a digest of its inputs (:func:`inputs_digest`, attribute ``corrnet_inputs``):
an existing output made from the same inputs is kept, one made from others is refused unless
``overwrite``.

Ground truth is validated where it enters: K with finite, positive focal lengths, R a
rotation (R Rᵀ = I within 1e-3, det +1), finite T / t; errors name the file (and pair).
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing as mp
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import h5py
import numpy as np
import torch
from tqdm import tqdm

from corrnet.atomic import (
    atomic_path,
    check_regular_input,
    exclusive_lock,
    remove_stale_temporaries,
)
from corrnet.constants import DEFAULT_DETECTOR, DETECTORS, NUM_FEATURES
from corrnet.errors import UserError, one_line, same_file, worker_signals
from corrnet.geometry.checks import intrinsics_problem, rotation_problem
from corrnet.images import image_size, read_image

from .oanet_hdf5 import text_attribute, write_oanet_hdf5
from .sample import MIN_MATCHES, episym, intrinsics, normalized_matches

CONTRAST_THRESHOLD = 1e-5
MIN_TRANSLATION = 1e-5
INPUTS_ATTR = "corrnet_inputs"
"""HDF5 file attribute holding :func:`inputs_digest` of the pairs an output was made from."""
PROTOCOL_ATTR = "corrnet_protocol"
"""HDF5 file attribute holding :func:`protocol` of the preparation that wrote the file."""
NUM_FEATURES_ATTR = "num_features"
"""HDF5 file attribute holding the keypoint count per image of the preparation."""
DETECTOR_ATTR = "detector"
"""HDF5 file attribute holding the detector of the preparation (:data:`DETECTORS`)."""


def check_detector(detector: str) -> str:
    """``detector`` if it is one of :data:`~corrnet.constants.DETECTORS`, else UserError."""
    if detector not in DETECTORS:
        raise UserError(f"detector: expected one of {', '.join(DETECTORS)}, got {detector!r}")
    return detector


def usable_detector(detector: str) -> str:
    """``detector`` if it is one of :data:`~corrnet.constants.DETECTORS` and the installed
    OpenCV has it (checked before any work), else UserError."""
    if check_detector(detector) == "akaze":
        akaze_factory()
    return detector


def protocol(num_features: int = NUM_FEATURES, detector: str = DEFAULT_DETECTOR) -> str:
    """The preparation's protocol for ``num_features`` keypoints per image of ``detector``;
    changes whenever the extraction or matching would give other results (or other keys) for
    the same inputs (SIFT's is the one of the files prepared before other detectors existed)."""
    if check_detector(detector) == "sift":
        extraction = f"sift={num_features} contrast={CONTRAST_THRESHOLD} nn"
    else:
        extraction = f"{detector}={num_features} nn-hamming"
    return f"corrnet-prepare-2 {extraction} sizes-angles-dists"


Undistort = Callable[[np.ndarray], np.ndarray]
"""Map of distorted keypoint pixels (n, 2) to pixels of the pinhole camera K."""


@dataclass(frozen=True)
class PairSpec:
    """One image pair with ground truth.

    K1, K2: (3, 3) absolute intrinsics (pixel-centre convention, as ``cv2.KeyPoint.pt``).
    R (3, 3), t (3,): motion X₂ = R X₁ + t from camera 1 to camera 2 (t in any scale).
    undistort1, undistort2: optional maps of (n, 2) keypoint pixels of a distorted camera to
    pixels of K1 / K2 (picklable; their repr identifies the camera and names the cache entry).
    """

    key: str
    image1: Path
    image2: Path
    K1: np.ndarray
    K2: np.ndarray
    R: np.ndarray
    t: np.ndarray
    undistort1: Undistort | None = None
    undistort2: Undistort | None = None


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: list file not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def load_calibration(
    path: Path, image: Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OANet calibration file -> absolute K (3, 3), world-to-camera R (3, 3), T (3,).

    The stored K holds principal-point offsets from the image centre:
    cx = (width - 1) / 2 + K[0, 2], cy = (height - 1) / 2 + K[1, 2].  ``image``: the file the
    calibration belongs to; UserError naming both when it decodes to another size than
    ``imsize`` (a wrong imsize, or pixels rotated by 90 degrees, would shift the principal
    point and every label).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: calibration file not found")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("K", "R", "T", "imsize") if k not in f]
            if missing:
                raise UserError(f"{path}: missing key(s) {missing}; expected K, R, T, imsize")
            K, R, T, size = (
                np.asarray(f[k][()], np.float64).reshape(-1) for k in ("K", "R", "T", "imsize")
            )
    except (OSError, KeyError, RuntimeError, TypeError) as err:  # not HDF5, damaged, or not numbers
        raise UserError(f"{path}: not a readable calibration file ({one_line(err)})") from None
    if K.size != 9 or R.size != 9 or T.size != 3 or size.size != 2:
        raise UserError(
            f"{path}: expected K (3,3), R (3,3), T (3,), imsize (2,), got sizes "
            f"{K.size}, {R.size}, {T.size}, {size.size}"
        )
    K, R = K.reshape(3, 3), R.reshape(3, 3)
    problems = {
        "K": intrinsics_problem(K),
        "R": rotation_problem(R),
        "T": None if np.isfinite(T).all() else "expected finite values, got NaN or inf",
        "imsize": None if (size > 0).all() else f"expected a positive size, got {size.tolist()}",
    }
    for key, problem in problems.items():
        if problem is not None:
            raise UserError(f"{path}: {key}: {problem}")
    w, h = size
    if image is not None:
        decoded = image_size(image)
        if decoded != (w, h):
            raise UserError(
                f"{image}: decodes to {decoded[0]} x {decoded[1]} pixels but its calibration "
                f"{path} has imsize {w:g} x {h:g}"
            )
    return intrinsics(K[0, 0], K[1, 1], (w - 1) / 2 + K[0, 2], (h - 1) / 2 + K[1, 2]), R, T


def relative_pose(
    R1: np.ndarray, T1: np.ndarray, R2: np.ndarray, T2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Relative motion of world-to-camera poses: R = R2 R1ᵀ, t = T2 - R T1 (not normalised)."""
    R = R2 @ R1.T
    return R, T2 - R @ T1


def find_sequences(raw: Path, names: Sequence[str] | None = None) -> list[Path]:
    """Sequence folders under ``raw`` (those with ``test/images.txt``), or the named ones; ``raw``
    itself where it is one sequence folder."""
    if not raw.is_dir():
        raise FileNotFoundError(f"{raw}: no such folder (expected OANet's raw layout <seq>/test/)")
    if names:
        seqs = [raw / n for n in names]
        for s in seqs:
            if not (s / "test" / "images.txt").is_file():
                raise FileNotFoundError(f"{s}: expected a sequence folder with test/images.txt")
        return seqs
    if (raw / "test" / "images.txt").is_file():
        return [raw]
    seqs = sorted(p.parent.parent for p in raw.glob("*/test/images.txt"))
    if not seqs:
        raise FileNotFoundError(f"{raw}: no sequence folders <seq>/test/images.txt found")
    return seqs


def read_sequence(seq: Path) -> list[PairSpec]:
    """All pairs of ``<seq>/test/pairs.txt`` ("i j" per line, 0-based into images.txt)."""
    root = seq / "test"
    images = [root / p for p in _read_list(root / "images.txt")]
    calibs = [root / p for p in _read_list(root / "calibration.txt")]
    if len(images) != len(calibs):
        raise UserError(
            f"{root}: images.txt has {len(images)} lines, calibration.txt {len(calibs)}"
        )
    index_pairs = []
    for n, line in enumerate(_read_list(root / "pairs.txt")):
        try:
            i, j = (int(v) for v in line.split())
        except ValueError:
            raise UserError(
                f"{root / 'pairs.txt'}: line {n + 1}: expected 'i j', got {line!r}"
            ) from None
        if not (0 <= i < len(images) and 0 <= j < len(images)):
            raise UserError(
                f"{root / 'pairs.txt'}: line {n + 1}: index outside 0..{len(images) - 1}"
            )
        index_pairs.append((i, j))
    cams = {}
    for k in sorted({k for p in index_pairs for k in p}):
        try:
            cams[k] = load_calibration(calibs[k], images[k])
        except FileNotFoundError as err:
            i, j = next(p for p in index_pairs if k in p)
            raise FileNotFoundError(f"{err} (pair {seq.name}/{i}-{j})") from None
    pairs = []
    for i, j in index_pairs:
        (K1, R1, T1), (K2, R2, T2) = cams[i], cams[j]
        R, t = relative_pose(R1, T1, R2, T2)
        pairs.append(PairSpec(f"{seq.name}/{i}-{j}", images[i], images[j], K1, K2, R, t))
    return pairs


def _finite_array(value: object, shape: tuple[int, ...], where: str) -> np.ndarray:
    """``value`` as a float64 array of ``shape`` with finite entries; UserError naming ``where``."""
    try:
        a = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise UserError(
            f"{where}: expected finite numbers of shape {shape}, got {value!r}"
        ) from None
    if a.shape != shape:
        raise UserError(f"{where}: expected finite numbers of shape {shape}, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise UserError(f"{where}: expected finite numbers of shape {shape}, got NaN or inf")
    return a


def read_pairs_file(path: Path) -> list[PairSpec]:
    """Pairs from a JSON file: a list of objects with keys

    ``image1``, ``image2`` (paths, relative to the JSON file's folder or absolute),
    ``K1``, ``K2`` (3x3 absolute intrinsics in pixels, pixel-centre convention),
    ``R`` (3x3 rotation) and ``t`` (3) with X₂ = R X₁ + t, and an optional unique ``name``.
    Raises ValueError naming the file, the pair and the key for anything else.
    """
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read a JSON pairs file: {err}") from None
    except RecursionError:
        raise UserError(f"{path}: cannot read a JSON pairs file: nested too deeply") from None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a JSON list of pair objects")
    pairs = []
    shapes = {"K1": (3, 3), "K2": (3, 3), "R": (3, 3), "t": (3,)}
    for n, e in enumerate(entries):
        if not isinstance(e, dict):
            raise UserError(f"{path}: pair {n}: expected an object, got {type(e).__name__}")
        missing = [k for k in ("image1", "image2", *shapes) if k not in e]
        if missing:
            raise UserError(f"{path}: pair {n}: missing key(s) {missing}")
        arrays = {
            k: _finite_array(e[k], shape, f"{path}: pair {n}: {k}") for k, shape in shapes.items()
        }
        problems = {
            "K1": intrinsics_problem(arrays["K1"]),
            "K2": intrinsics_problem(arrays["K2"]),
            "R": rotation_problem(arrays["R"]),
        }
        for key, problem in problems.items():
            if problem is not None:
                raise UserError(f"{path}: pair {n}: {key}: {problem}")
        for key in ("image1", "image2"):
            if not isinstance(e[key], str):
                raise UserError(f"{path}: pair {n}: {key}: expected a path string, got {e[key]!r}")
        images = [Path(path).parent / e[k] for k in ("image1", "image2")]
        pairs.append(PairSpec(str(e.get("name", f"{Path(path).stem}/{n}")), *images, **arrays))
    return pairs


def select_pairs(pairs: Sequence[PairSpec], max_pairs: int | None, seed: int) -> list[PairSpec]:
    """At most ``max_pairs`` pairs drawn without replacement with ``seed``, in input order."""
    if max_pairs is None or max_pairs >= len(pairs):
        return list(pairs)
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False))
    return [pairs[i] for i in keep]


class Features(NamedTuple):
    """Features of one image, n keypoints in the detector's order (:func:`detect_features`).

    kp (n, 2) float64 pixels (``cv2.KeyPoint.pt``); desc (n, 128) float32 SIFT descriptors,
    or (n, B) uint8 binary ones (ORB: B = 32, AKAZE: 61), matched by Hamming distance;
    sizes (n,) float64 ``cv2.KeyPoint.size`` (diameter of the keypoint's neighbourhood, pixels;
    ORB's is its patch size 31 times the scale factor 1.2 to the power of the octave);
    angles (n,) float64 ``cv2.KeyPoint.angle`` (degrees in [0, 360), OpenCV's convention:
    measured in image coordinates, y pointing down).
    """

    kp: np.ndarray
    desc: np.ndarray
    sizes: np.ndarray
    angles: np.ndarray


def akaze_factory() -> Callable[[], cv2.Feature2D]:
    """OpenCV's ``AKAZE_create`` (OpenCV 4's features2d, or OpenCV 5's contrib module
    ``xfeatures2d``); UserError when the installed OpenCV has neither."""
    create = getattr(cv2, "AKAZE_create", None) or getattr(
        getattr(cv2, "xfeatures2d", None), "AKAZE_create", None
    )
    if create is None:
        raise UserError(
            f"detector akaze: OpenCV {cv2.__version__} has no AKAZE (OpenCV 5 moved it to the "
            f"contrib modules): install opencv-contrib-python-headless instead of "
            f"opencv-python-headless, or choose sift or orb"
        )
    return create


DESCRIPTOR_SHAPES = {"sift": (128, np.float32), "orb": (32, np.uint8), "akaze": (61, np.uint8)}
"""Descriptor length and dtype of each detector (an image without keypoints gets (0, length))."""


def detect_features(
    img: np.ndarray, num_features: int = NUM_FEATURES, detector: str = DEFAULT_DETECTOR
) -> Features:
    """:class:`Features` of a (h, w, 3) uint8 BGR (or (h, w) grey) image, at most
    ``num_features`` keypoints of ``detector``: SIFT (OANet's settings) and ORB in OpenCV's
    order (SIFT's: strongest first), AKAZE (OpenCV's defaults) sorted by response, strongest
    first."""
    if num_features < 1:
        raise UserError(f"num_features: expected a positive count, got {num_features}")
    if check_detector(detector) == "sift":
        extractor = cv2.SIFT_create(nfeatures=num_features, contrastThreshold=CONTRAST_THRESHOLD)
    elif detector == "orb":
        extractor = cv2.ORB_create(nfeatures=num_features)
    else:
        extractor = akaze_factory()()
    kps, desc = extractor.detectAndCompute(img, None)
    length, dtype = DESCRIPTOR_SHAPES[detector]
    desc = np.zeros((0, length), dtype) if desc is None else desc
    keep = np.arange(len(kps))
    if detector == "akaze":
        keep = np.argsort([-k.response for k in kps], kind="stable").astype(np.int64)
    keep = keep[:num_features]
    kps = [kps[i] for i in keep]
    column = lambda values: np.array(values, np.float64).reshape(-1)
    return Features(
        np.array([k.pt for k in kps], np.float64).reshape(-1, 2),
        desc[keep],
        column([k.size for k in kps]),
        column([k.angle for k in kps]),
    )


def sift_features(img: np.ndarray, num_features: int = NUM_FEATURES) -> Features:
    """SIFT :class:`Features` of a (h, w, 3) uint8 BGR image, at most ``num_features`` keypoints."""
    return detect_features(img, num_features, "sift")


def extract_sift(image: Path, num_features: int = NUM_FEATURES) -> Features:
    """SIFT :class:`Features` of an image file (:func:`sift_features`)."""
    return extract_features(image, num_features, "sift")


def extract_features(
    image: Path, num_features: int = NUM_FEATURES, detector: str = DEFAULT_DETECTOR
) -> Features:
    """:class:`Features` of an image file (:func:`detect_features`)."""
    return detect_features(read_image(image), num_features, detector)


def squared_distances(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """(n1, n2) float64 squared distances between the rows of d1 (n1, D) and d2 (n2, D): L2
    for float descriptors, Hamming (OpenCV's ``NORM_HAMMING``: the count of differing bits)
    for uint8 binary ones."""
    if d1.dtype == np.uint8 and d2.dtype == np.uint8:
        # bit counts (at most 8 x D) are exact in float32, at half float64's time
        a, b = (np.unpackbits(d, axis=1).astype(np.float32) for d in (d1, d2))
        return np.square((a.sum(1)[:, None] + b.sum(1)[None] - 2 * (a @ b.T)).astype(np.float64))
    a, b = d1.astype(np.float64), d2.astype(np.float64)
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T, 0.0)


def nearest_neighbours(
    d1: np.ndarray, d2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest neighbour in d2 of every row of d1.  (n1, D), (n2, D) with n2 >= 2: float
    descriptors by L2, uint8 binary ones by Hamming distance (:func:`squared_distances`).

    Returns the index (n1,), the ratio of the nearest to the second nearest distance (n1,),
    whether the match is a mutual nearest neighbour (n1,) bool and the nearest and second
    nearest distances (n1, 2) float64 (in descriptor units: L2, or differing bits).
    """
    D = squared_distances(d1, d2)
    two = np.argpartition(D, 1, axis=1)[:, :2]
    d = np.take_along_axis(D, two, 1)
    order = np.argsort(d, axis=1)
    nn = np.take_along_axis(two, order[:, :1], 1)[:, 0]
    d = np.sqrt(np.take_along_axis(d, order, 1))
    ratio = d[:, 0] / np.maximum(d[:, 1], 1e-12)
    mutual = D.argmin(0)[nn] == np.arange(len(d1))
    return nn, ratio, mutual, d


@dataclass(frozen=True)
class PutativeMatches:
    """Nearest-neighbour matches of every keypoint of image 1 (N = its keypoint count).

    uv1, uv2 (N, 2) float64 pixels; xs (N, 4) float64 normalised [x1, y1, x2, y2]; nn (N,) int
    index of the match among image 2's keypoints; ratios (N,) d1/d2; mutuals (N,) bool;
    sizes, angles (N, 2) float64: the keypoint size (pixels) and angle (degrees) in image 1
    and image 2; dists (N, 2) float64: nearest and second-nearest descriptor distance.
    """

    uv1: np.ndarray
    uv2: np.ndarray
    xs: np.ndarray
    nn: np.ndarray
    ratios: np.ndarray
    mutuals: np.ndarray
    sizes: np.ndarray
    angles: np.ndarray
    dists: np.ndarray

    def measurements(self, ratios: bool = True) -> dict[str, np.ndarray]:
        """What the detector and matching measured per match, as
        :meth:`corrnet.Verifier.verify`'s keyword arguments (N,) each: ratios, mutuals,
        scales1/2, angles1/2, distances (the nearest); without ``ratios``, the keypoints'
        scales and angles only (what the ratio-free weights read)."""
        matching = {"ratios": self.ratios, "mutuals": self.mutuals, "distances": self.dists[:, 0]}
        return {
            **(matching if ratios else {}),
            "scales1": self.sizes[:, 0],
            "scales2": self.sizes[:, 1],
            "angles1": self.angles[:, 0],
            "angles2": self.angles[:, 1],
        }


def putative_matches(
    feats1: Features,
    feats2: Features,
    K1: np.ndarray,
    K2: np.ndarray,
    what: str = "pair",
    names: tuple[object, object] = ("image 1", "image 2"),
    undistort: tuple[Undistort | None, Undistort | None] = (None, None),
) -> PutativeMatches:
    """The nearest neighbour in image 2 of every keypoint of image 1, with ratio and mutual flag.

    feats: the two images' :class:`Features`; K1, K2 (3, 3) absolute intrinsics
    of the (undistorted) pinhole cameras; ``undistort``: per image, None or a map of distorted
    keypoint pixels (n, 2) to pinhole pixels, applied before normalising (the stored
    keypoints stay as detected).
    Raises ValueError starting with ``what`` and naming ``names`` when image 1 has fewer than
    MIN_MATCHES keypoints or image 2 fewer than 2.
    """
    kp1, d1, kp2, d2 = feats1.kp, feats1.desc, feats2.kp, feats2.desc
    if len(kp1) < MIN_MATCHES or len(kp2) < 2:
        raise UserError(
            f"{what}: expected at least {MIN_MATCHES} keypoints in image 1 "
            f"and 2 in image 2, got {len(kp1)} ({names[0]}) and {len(kp2)} ({names[1]})"
        )
    nn, ratio, mutual, dists = nearest_neighbours(d1, d2)
    uv1, uv2 = (uv if f is None else f(uv) for uv, f in zip((kp1, kp2[nn]), undistort))
    return PutativeMatches(
        kp1,
        kp2[nn],
        normalized_matches(uv1, uv2, K1, K2),
        nn,
        ratio,
        mutual,
        np.stack([feats1.sizes, feats2.sizes[nn]], 1),
        np.stack([feats1.angles, feats2.angles[nn]], 1),
        dists,
    )


def match_pair(spec: PairSpec, feats1: Features, feats2: Features) -> dict[str, np.ndarray | str]:
    """Putative matches of a pair as a numpy sample (keys as the corrnet sample, no labels)."""
    m = putative_matches(
        feats1,
        feats2,
        spec.K1,
        spec.K2,
        f"pair {spec.key}",
        (spec.image1, spec.image2),
        (spec.undistort1, spec.undistort2),
    )
    t = spec.t / np.linalg.norm(spec.t)
    return {
        "xs": m.xs,
        "ys": episym(m.xs, spec.R, t),
        "R": spec.R,
        "t": t,
        "ratios": m.ratios,
        "mutuals": m.mutuals.astype(np.float64),
        "sizes": m.sizes,
        "angles": m.angles,
        "dists": m.dists,
        "K1": spec.K1,
        "K2": spec.K2,
        "image1": str(spec.image1),
        "image2": str(spec.image2),
    }


def _cache_name(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:20] + ".npz"


@functools.lru_cache(maxsize=None)
def _content_digest(path: Path, size: int, mtime_ns: int) -> str:
    """SHA-1 of a file's bytes (the size and mtime key the memo: an edited file is read again)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def image_digest(image: Path) -> str:
    """Content digest of an image file; FileNotFoundError naming it when it is missing."""
    try:
        st = Path(image).stat()
    except OSError:
        raise FileNotFoundError(f"{image}: image not found") from None
    check_regular_input(image, "image")  # a FIFO or /dev/zero would be read forever
    return _content_digest(Path(image).resolve(), st.st_size, st.st_mtime_ns)


def _feature_cache_name(
    image: Path, num_features: int = NUM_FEATURES, detector: str = DEFAULT_DETECTOR
) -> str:
    """Cache file name of an image's features: changes with the image's content and the
    protocol (detector and keypoint count)."""
    return _cache_name(f"{protocol(num_features, detector)}\n{image_digest(image)}")


def _pair_cache_name(
    spec: PairSpec, num_features: int = NUM_FEATURES, detector: str = DEFAULT_DETECTOR
) -> str:
    """Cache file name of a pair's matches: changes with the protocol (detector and keypoint
    count), its key, images' content and geometry."""
    geometry = np.concatenate(
        [np.ravel(a).astype(np.float64) for a in (spec.K1, spec.K2, spec.R, spec.t)]
    )
    return _cache_name(
        "\n".join(
            [
                protocol(num_features, detector),
                spec.key,
                str(Path(spec.image1).resolve()),
                str(Path(spec.image2).resolve()),
                image_digest(spec.image1),
                image_digest(spec.image2),
                geometry.tobytes().hex(),
                repr(spec.undistort1),
                repr(spec.undistort2),
            ]
        )
    )


def inputs_digest(
    pairs: Sequence[PairSpec], num_features: int = NUM_FEATURES, detector: str = DEFAULT_DETECTOR
) -> str:
    """Digest of what an output is made from: the protocol (with the detector and keypoint
    count) and, in order, every pair's key, image paths and content, K1, K2, R and t.  Raises
    FileNotFoundError naming a missing image and its pair."""
    names = []
    for p in pairs:
        try:
            names.append(_pair_cache_name(p, num_features, detector))
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err} (pair {p.key})") from None
    lines = [protocol(num_features, detector), *names]
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()


def recorded_attr(out: Path, name: str) -> str | None:
    """The string attribute ``name`` of an existing output (None: absent).

    Raises FileExistsError naming ``out`` when it is not an HDF5 file.
    """
    try:
        with h5py.File(out, "r") as f:
            return text_attribute(f.attrs, name)
    except OSError:
        raise FileExistsError(
            f"{out}: exists and is not an HDF5 file; pass --overwrite to replace "
            f"it or choose another --out"
        ) from None


def recorded_inputs(out: Path) -> str | None:
    """The :func:`inputs_digest` an existing output records (None: not made by prepare).

    Raises FileExistsError naming ``out`` when it is not an HDF5 file.
    """
    return recorded_attr(out, INPUTS_ATTR)


def _save_npz(path: Path, **arrays: np.ndarray | str) -> None:
    """np.savez to a temporary file, then rename: a cache entry is complete or absent."""
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, **arrays)


def _features_job(args: tuple[Path, Path, int, str]) -> None:
    image, dest, num_features, detector = args
    _save_npz(dest, **extract_features(image, num_features, detector)._asdict())


def _load_features(path: Path) -> Features:
    with np.load(path) as z:
        return Features(*(z[k] for k in Features._fields))


def _pair_job(args: tuple[PairSpec, Path, Path, Path]) -> None:
    spec, f1, f2, dest = args
    sample = match_pair(spec, _load_features(f1), _load_features(f2))
    _save_npz(dest, **sample)


def _init_worker() -> None:
    """Pool initializer: one thread per worker process (the pool already uses the cores);
    Ctrl-C left to the command to report."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    worker_signals()


def _run(job: Callable, tasks: list, workers: int, desc: str) -> None:
    """Run ``job`` over ``tasks`` with a progress bar, in a process pool when workers > 1."""
    if not tasks:
        return
    if workers <= 1:
        for task in tqdm(tasks, desc=desc):
            job(task)
        return
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        for _ in tqdm(pool.imap_unordered(job, tasks), total=len(tasks), desc=desc):
            pass


def cache_dir_for(out: Path) -> Path:
    """Folder of the resumable per-image and per-pair results of ``out``."""
    return out.with_name(out.name + ".partial")


def lock_file_for(out: Path) -> Path:
    """Lock file of the run that writes ``out`` (``<out>.lock``, there while it runs)."""
    return out.with_name(out.name + ".lock")


def prepare(
    pairs: Iterable[PairSpec],
    out: str | Path,
    workers: int = 2,
    keep_cache: bool = False,
    overwrite: bool = False,
    attrs: dict[str, str | int | float] | None = None,
    num_features: int = NUM_FEATURES,
    detector: str = DEFAULT_DETECTOR,
) -> int:
    """Write the putative matches of ``pairs`` to ``out`` (OANet HDF5 layout), with at most
    ``num_features`` keypoints per image of ``detector`` (:func:`detect_features`).

    Resumable: features and per-pair matches already in ``<out>.partial/`` are reused.  If
    ``out`` exists and records the same :func:`inputs_digest`, nothing is done; if it was
    made from other inputs (or not by prepare) it is refused with FileExistsError unless
    ``overwrite``.  Returns the number of pairs in ``out`` (pairs with |t| < 1e-5 are dropped
    with a warning).  ``attrs`` are written as file attributes, beside :data:`INPUTS_ATTR`,
    :data:`PROTOCOL_ATTR`, :data:`NUM_FEATURES_ATTR` and :data:`DETECTOR_ATTR`.

    One run at a time per ``out``: the run holds :func:`lock_file_for` ``(out)``; another
    run into the same ``out`` is refused with LockedError (an OSError) naming the lock and
    the process holding it, and leaves the cache alone.
    """
    usable_detector(detector)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock_file_for(out), f"{out} (with its cache {cache_dir_for(out)})"):
        return _prepare(pairs, out, workers, keep_cache, overwrite, attrs, num_features, detector)


def _prepare(
    pairs: Iterable[PairSpec],
    out: Path,
    workers: int,
    keep_cache: bool,
    overwrite: bool,
    attrs: dict[str, str | int | float] | None,
    num_features: int,
    detector: str,
) -> int:
    """:func:`prepare` while holding its lock."""
    if num_features < MIN_MATCHES:
        raise UserError(
            f"num_features: expected at least {MIN_MATCHES} keypoints per image, got {num_features}"
        )
    out = Path(out)
    pairs = list(pairs)
    keys = [p.key for p in pairs]
    duplicates = sorted(k for k, count in Counter(keys).items() if count > 1)
    if duplicates:
        raise UserError(f"pairs: expected unique pair keys, got {duplicates[:3]} more than once")
    if any(same_file(out, image) for image in {img for p in pairs for img in (p.image1, p.image2)}):
        raise UserError(f"{out}: is also one of the input images; choose another output path")
    kept = [p for p in pairs if np.linalg.norm(p.t) >= MIN_TRANSLATION]
    if len(kept) < len(pairs):
        warnings.warn(
            f"dropped {len(pairs) - len(kept)} pair(s) with |t| < {MIN_TRANSLATION}", stacklevel=2
        )
    digest = inputs_digest(kept, num_features, detector)
    asked = protocol(num_features, detector)
    if out.exists():
        if recorded_inputs(out) == digest:
            with h5py.File(out, "r") as f:
                return len(f["xs"])
        if not overwrite:
            made_by = recorded_attr(out, PROTOCOL_ATTR)
            why = (
                f"by another preparation protocol ({made_by!r}, not {asked!r})"
                if made_by != asked
                else "from other inputs (other pairs, sequences, --max-pairs or images)"
            )
            raise FileExistsError(
                f"{out}: exists and was made {why}; pass --overwrite to replace it or "
                f"choose another --out"
            )
    cache = cache_dir_for(out)
    for sub in ("features", "pairs"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(cache / sub)
    feat = {
        img: cache / "features" / _feature_cache_name(img, num_features, detector)
        for p in kept
        for img in (p.image1, p.image2)
    }
    pair_file = {p.key: cache / "pairs" / _pair_cache_name(p, num_features, detector) for p in kept}
    todo = [p for p in kept if not pair_file[p.key].exists()]
    images = list(dict.fromkeys(img for p in todo for img in (p.image1, p.image2)))
    _run(
        _features_job,
        [(img, feat[img], num_features, detector) for img in images if not feat[img].exists()],
        workers,
        detector.upper(),
    )
    _run(
        _pair_job,
        [(p, feat[p.image1], feat[p.image2], pair_file[p.key]) for p in todo],
        workers,
        "matching",
    )

    def samples() -> Iterable[dict]:
        for p in kept:
            with np.load(pair_file[p.key]) as z:
                yield {k: (str(z[k]) if k.startswith("image") else z[k]) for k in z.files}

    count = write_oanet_hdf5(
        out,
        samples(),
        total=len(kept),
        desc="writing",
        attrs={
            **(attrs or {}),
            INPUTS_ATTR: digest,
            PROTOCOL_ATTR: asked,
            NUM_FEATURES_ATTR: num_features,
            DETECTOR_ATTR: detector,
        },
    )
    if not keep_cache:
        shutil.rmtree(cache)
    return count
