"""Pairs with (pseudo-)ground truth from COLMAP sparse reconstructions.

Two entry points, both feeding :func:`corrnet.datasets.prepare.prepare` (SIFT, nearest
neighbours, ratio, mutual flag and epipolar labels exactly as for the raw layout):

* :func:`colmap_pairs` turns a sparse model (``cameras``, ``images``, ``points3D`` as ``.bin``
  or ``.txt``; read with pycolmap) into :class:`PairSpec` s.  Poses are COLMAP's
  world-to-camera ``cam_from_world``; a pair (i, j) gets R = R_j R_iᵀ, t = T_j - R T_i, so
  X₂ = R X₁ + t.  Pairs are chosen by covisibility (shared 3-D points, :func:`select_pairs`).
* :func:`reconstruct` runs pycolmap's SfM (SIFT, exhaustive or sequential matching,
  incremental mapping of one model) on an unposed folder, in the stages
  :func:`extract_and_match` (a database) and :func:`incremental_model` (a model).  Such poses
  are pseudo-ground-truth: they come from the same kind of matches the network is trained on.

Pixel conventions: COLMAP puts the centre of the top-left pixel at (0.5, 0.5), OpenCV's
keypoints (and corrnet's K) at (0, 0); K here is COLMAP's pinhole part shifted by -0.5.
Distorted cameras (SIMPLE_RADIAL, RADIAL, OPENCV) are undistorted per keypoint
(:class:`~corrnet.datasets.distortion.Undistorter`) before normalisation.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pycolmap
from tqdm import tqdm

from corrnet.errors import UserError
from corrnet.images import image_size

from .distortion import Undistorter
from .prepare import PairSpec, relative_pose

CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
"""COLMAP camera models read; the last three are undistorted per keypoint."""
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
MODEL_FILES = ("cameras", "images", "points3D")
SFM_MAX_FEATURES = 4096
"""SIFT features per image for the reconstruction (COLMAP's default 8192 doubles matching time)."""
MIN_REGISTERED = 3
"""A reconstruction with fewer registered images is reported as failed."""
EXHAUSTIVE_MAX_IMAGES = 60
"""``matcher="auto"`` matches exhaustively up to this many images, sequentially above."""
POSE_NOTE = (
    "pseudo-ground-truth: COLMAP incremental SfM (pycolmap) of the same images, "
    "not an independent measurement"
)


class ReconstructionError(UserError, RuntimeError):
    """The SfM of a folder of images failed (too few images registered): bad input, the
    images; a RuntimeError too, as before."""


def read_model(model_dir: str | Path) -> pycolmap.Reconstruction:
    """A COLMAP sparse model (binary or text) with its cameras checked against CAMERA_MODELS."""
    model_dir = Path(model_dir)
    if not any(
        all((model_dir / f"{n}{ext}").is_file() for n in MODEL_FILES) for ext in (".bin", ".txt")
    ):
        raise FileNotFoundError(
            f"{model_dir}: expected a COLMAP sparse model "
            f"({', '.join(MODEL_FILES)} as .bin or .txt)"
        )
    rec = pycolmap.Reconstruction()
    rec.read(str(model_dir))
    for cam_id, cam in rec.cameras.items():
        if cam.model_name not in CAMERA_MODELS:
            raise UserError(
                f"{model_dir}: camera {cam_id}: model {cam.model_name} not supported; "
                f"expected one of {', '.join(CAMERA_MODELS)}"
            )
    return rec


def pinhole_K(camera: pycolmap.Camera) -> np.ndarray:
    """(3, 3) absolute intrinsics of a COLMAP camera's pinhole part, pixel-centre convention."""
    K = np.array(camera.calibration_matrix(), np.float64)
    K[:2, 2] -= 0.5
    return K


def undistorter(camera: pycolmap.Camera) -> Undistorter | None:
    """The keypoint undistortion of a camera (to :func:`pinhole_K`), or None for a pinhole model.

    COLMAP's extra parameters are (k1) for SIMPLE_RADIAL, (k1, k2) for RADIAL and
    (k1, k2, p1, p2) for OPENCV: OpenCV's coefficients, zero-padded.
    """
    if camera.model_name in PINHOLE_MODELS:
        return None
    extra = [float(camera.params[i]) for i in camera.extra_params_idxs()]
    K = pinhole_K(camera)
    k1, k2, p1, p2 = (extra + [0.0] * 4)[:4]
    return Undistorter(
        float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), (k1, k2, p1, p2)
    )


def covisibility(rec: pycolmap.Reconstruction) -> tuple[list[int], np.ndarray]:
    """Registered image ids (sorted by name) and their shared-3-D-point counts (n, n) int64.

    Entry (a, b) counts the 3-D points observed in both images a and b; the diagonal counts
    the 3-D points each image observes.
    """
    ids = sorted(rec.reg_image_ids(), key=lambda i: rec.images[i].name)
    row = {image_id: k for k, image_id in enumerate(ids)}
    counts = np.zeros((len(ids), len(ids)), np.int64)
    for point in rec.points3D.values():
        rows = np.unique([row[el.image_id] for el in point.track.elements if el.image_id in row])
        counts[np.ix_(rows, rows)] += 1
    return ids, counts


def select_pairs(
    counts: np.ndarray, min_overlap: float, max_pairs_per_image: int | None, seed: int = 0
) -> list[tuple[int, int]]:
    """Covisible pairs (a, b), a < b, as indices into ``counts`` (from :func:`covisibility`).

    The overlap of a pair is its shared 3-D points over the smaller of the two images' 3-D
    point counts (0..1: the share of the less-covered view that the other sees too).  Pairs with
    overlap >= ``min_overlap`` (and at least one shared point) are visited in a random order
    fixed by ``seed`` and kept while both images have fewer than ``max_pairs_per_image`` pairs
    (None: no cap), so the kept pairs spread over all baselines.  Sorted output.
    """
    if not 0.0 <= min_overlap <= 1.0:
        raise UserError(f"min_overlap: expected a share in [0, 1], got {min_overlap}")
    if max_pairs_per_image is not None and max_pairs_per_image < 1:
        raise UserError(f"max_pairs_per_image: expected >= 1, got {max_pairs_per_image}")
    n = len(counts)
    own = np.diag(counts).astype(np.float64)
    a, b = np.triu_indices(n, 1)
    shared = counts[a, b]
    overlap = shared / np.maximum(np.minimum(own[a], own[b]), 1.0)
    ok = (shared > 0) & (overlap >= min_overlap)
    a, b = a[ok], b[ok]
    order = np.random.default_rng(seed).permutation(len(a))
    used = np.zeros(n, np.int64)
    cap = np.inf if max_pairs_per_image is None else max_pairs_per_image
    kept = []
    for k in order:
        i, j = int(a[k]), int(b[k])
        if used[i] < cap and used[j] < cap:
            kept.append((i, j))
            used[i] += 1
            used[j] += 1
    return sorted(kept)


def colmap_pairs(
    rec: pycolmap.Reconstruction,
    images_dir: str | Path,
    prefix: str,
    min_overlap: float = 0.1,
    max_pairs_per_image: int | None = None,
    seed: int = 0,
) -> list[PairSpec]:
    """Covisible pairs of a reconstruction as :class:`PairSpec` (keys ``prefix/name1-name2``).

    Image paths are ``images_dir / image.name``; see :func:`select_pairs` for the selection.
    """
    images_dir = Path(images_dir)
    ids, counts = covisibility(rec)
    # K and undistortion once per camera (shared by the camera's pairs, which only read them)
    cameras = {cam_id: (pinhole_K(cam), undistorter(cam)) for cam_id, cam in rec.cameras.items()}
    pairs = []
    for a, b in select_pairs(counts, min_overlap, max_pairs_per_image, seed):
        im1, im2 = rec.images[ids[a]], rec.images[ids[b]]
        poses = [im.cam_from_world() for im in (im1, im2)]
        R, t = relative_pose(
            *(
                np.asarray(x, np.float64)
                for p in poses
                for x in (p.rotation.matrix(), p.translation)
            )
        )
        (K1, undistort1), (K2, undistort2) = cameras[im1.camera_id], cameras[im2.camera_id]
        pairs.append(
            PairSpec(
                f"{prefix}/{im1.name}-{im2.name}",
                images_dir / im1.name,
                images_dir / im2.name,
                K1,
                K2,
                R,
                t,
                undistort1,
                undistort2,
            )
        )
    return pairs


def _quiet_colmap() -> None:
    pycolmap.logging.minloglevel = 2  # warnings from COLMAP's glog would flood the bars


def _camera_groups(
    images_dir: Path, names: list[str], camera_mode: str
) -> tuple[list[list[str]], str]:
    """The image names in feature-extraction groups, and the COLMAP camera mode of each.

    "auto" reads every image's size (:func:`corrnet.images.image_size`): one group per size,
    one shared camera each ("single"); another mode is one group of all names in that mode.
    """
    if camera_mode != "auto":
        return [names], camera_mode
    sizes = [image_size(images_dir / n) for n in names]
    return [
        [n for n, z in zip(names, sizes) if z == size] for size in dict.fromkeys(sizes)
    ], "single"


def parse_camera(model: str, params: str) -> tuple[str, list[float]]:
    """Known intrinsics ``(model, params)`` of a COLMAP camera model, checked.

    ``params``: comma-separated, in COLMAP's order and pixel convention (top-left pixel
    centre at 0.5, 0.5), as COLMAP's ``--ImageReader.camera_params`` takes them; e.g.
    PINHOLE "fx,fy,cx,cy".
    """
    if model not in CAMERA_MODELS:
        raise UserError(f"camera model: expected one of {list(CAMERA_MODELS)}, got {model!r}")
    default = pycolmap.Camera.create_from_model_name(0, model, 1.0, 1, 1)
    try:
        values = [float(v) for v in params.split(",")]
    except ValueError:
        raise UserError(
            f"camera params: expected comma-separated numbers ({default.params_info}), "
            f"got {params!r}"
        ) from None
    if len(values) != default.params.size or not all(np.isfinite(values)):
        raise UserError(f"camera params of {model}: expected {default.params_info}, got {params!r}")
    return model, values


_SFM_CAMERA_MODES = {
    "single": pycolmap.CameraMode.SINGLE,
    "per-image": pycolmap.CameraMode.PER_IMAGE,
}


def _image_names(images_dir: Path) -> list[str]:
    """The .jpg/.jpeg/.png files of a folder, sorted; FileNotFoundError for fewer than 2."""
    names = (
        sorted(
            p.name for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        if images_dir.is_dir()
        else []
    )
    if len(names) < 2:
        raise FileNotFoundError(f"{images_dir}: expected a folder with at least 2 .jpg/.png images")
    return names


def extract_and_match(
    images_dir: str | Path,
    db: str | Path,
    matcher: str = "exhaustive",
    camera_mode: str = "auto",
    threads: int = 2,
    camera: tuple[str, list[float]] | None = None,
    names: list[str] | None = None,
) -> None:
    """COLMAP's SIFT (SFM_MAX_FEATURES per image) of the images ``names`` of a folder (all of
    its .jpg/.png files without) into a new database ``db``, then its matching and geometric
    verification (``matcher`` "exhaustive" or "sequential"), on the CPU; cameras as
    :func:`reconstruct` describes."""
    images_dir = Path(images_dir)
    names = _image_names(images_dir) if names is None else names
    _extract_features(images_dir, db, names, camera_mode, threads, camera)
    _match_features(db, matcher, threads)


def _extract_features(
    images_dir: Path,
    db: str | Path,
    names: list[str],
    camera_mode: str,
    threads: int,
    camera: tuple[str, list[float]] | None,
) -> None:
    """COLMAP's SIFT of the images ``names`` of ``images_dir`` into the database ``db``."""
    if camera is None:
        groups, group_mode = _camera_groups(images_dir, names, camera_mode)
        reader = pycolmap.ImageReaderOptions(camera_model="SIMPLE_RADIAL")
    else:  # COLMAP would silently skip the images of another size than the first
        groups, group_mode = _camera_groups(images_dir, names, "auto")
        if len(groups) > 1:
            raise UserError(
                f"{images_dir}: camera: known intrinsics are one camera, but the images have "
                f"{len(groups)} sizes ({groups[0][0]} and {groups[1][0]} differ)"
            )
        reader = pycolmap.ImageReaderOptions(
            camera_model=camera[0], camera_params=",".join(map(repr, camera[1]))
        )
    for group in groups:
        pycolmap.extract_features(
            db,
            images_dir,
            image_names=group,
            camera_mode=_SFM_CAMERA_MODES[group_mode],
            reader_options=reader,
            extraction_options=pycolmap.FeatureExtractionOptions(
                num_threads=threads,
                sift=pycolmap.SiftExtractionOptions(max_num_features=SFM_MAX_FEATURES),
            ),
            device=pycolmap.Device.cpu,
        )


def _match_features(db: str | Path, matcher: str, threads: int) -> None:
    """COLMAP's matching and geometric verification of a database ("exhaustive" or
    "sequential"); pairs already matched are skipped."""
    options = pycolmap.FeatureMatchingOptions(num_threads=threads)
    if matcher == "exhaustive":
        pycolmap.match_exhaustive(db, matching_options=options, device=pycolmap.Device.cpu)
    else:
        pycolmap.match_sequential(
            db,
            matching_options=options,
            device=pycolmap.Device.cpu,
            pairing_options=pycolmap.SequentialPairingOptions(num_threads=threads),
        )


def incremental_model(
    db: str | Path,
    images_dir: str | Path,
    out: str | Path,
    threads: int = 2,
    fixed_intrinsics: bool = False,
    callback: Callable[[], None] | None = None,
) -> tuple[pycolmap.Reconstruction | None, pycolmap.IncrementalPipelineOptions]:
    """pycolmap's incremental mapping of a database into the (existing) folder ``out``: one
    model grown from the best initial pair (``multiple_models`` off, seed 0), intrinsics held
    fixed in bundle adjustment with ``fixed_intrinsics``.  Returns the model with the most
    registered images (None when COLMAP returns none) and the options used."""
    options = pycolmap.IncrementalPipelineOptions(
        num_threads=threads, random_seed=0, multiple_models=False
    )
    if fixed_intrinsics:
        options.ba_refine_focal_length = options.ba_refine_principal_point = False
        options.ba_refine_extra_params = False
    kwargs = {} if callback is None else {"next_image_callback": callback}
    recs = pycolmap.incremental_mapping(db, images_dir, out, options, **kwargs)
    best = max(recs.values(), key=lambda r: r.num_reg_images()) if recs else None
    return best, options


def reconstruct(
    images_dir: str | Path,
    work: str | Path,
    matcher: str = "auto",
    camera_mode: str = "auto",
    threads: int = 2,
    camera: tuple[str, list[float]] | None = None,
) -> Path:
    """Reconstruct an unposed image folder with pycolmap; returns the model's folder.

    Cameras are SIMPLE_RADIAL with self-calibrated focal length and distortion (no EXIF is
    assumed).  ``camera_mode``: "single" (one device), "per-image" (internet photos) or
    "auto" (one camera per image size: one device, some photos rotated).  ``camera``: known
    intrinsics instead (from :func:`parse_camera`): one camera shared by all images (which must
    have one size), held fixed in bundle adjustment; it needs ``camera_mode`` "auto" or "single".
    ``matcher``: "exhaustive", "sequential" (files in capture order, overlap 10, quadratic) or
    "auto" (exhaustive up to EXHAUSTIVE_MAX_IMAGES images).  One model is grown (COLMAP's
    ``multiple_models`` off); if COLMAP still returns several, the one with the most
    registered images is kept.  Resumable: ``work`` keeps
    ``database.db`` and markers of the finished stages, and the chosen model in
    ``work/model`` (written under a temporary name, then renamed).
    """
    images_dir, work = Path(images_dir), Path(work)
    if camera_mode not in (*_SFM_CAMERA_MODES, "auto"):
        raise ValueError(
            f"camera_mode: expected one of {list(_SFM_CAMERA_MODES)}, got {camera_mode!r}"
        )
    if matcher not in ("auto", "exhaustive", "sequential"):
        raise ValueError(f"matcher: expected auto, exhaustive or sequential, got {matcher!r}")
    if camera is not None and camera_mode == "per-image":
        raise UserError(
            "camera: known intrinsics are one shared camera; camera_mode per-image contradicts it"
        )
    names = _image_names(images_dir)
    model = work / "model"
    if (model / "images.bin").is_file():
        return model
    if matcher == "auto":
        matcher = "exhaustive" if len(names) <= EXHAUSTIVE_MAX_IMAGES else "sequential"
    _quiet_colmap()
    work.mkdir(parents=True, exist_ok=True)
    db = work / "database.db"
    stages = tqdm(total=3, desc=f"SfM {images_dir.parent.name}/{images_dir.name}", unit="stage")
    if not (work / "features.done").exists():
        stages.set_postfix_str("SIFT")
        db.unlink(missing_ok=True)
        _extract_features(images_dir, db, names, camera_mode, threads, camera)
        (work / "features.done").touch()
    stages.update()
    if not (work / "matches.done").exists():  # COLMAP skips pairs already in the database
        stages.set_postfix_str(f"{matcher} matching")
        _match_features(db, matcher, threads)
        (work / "matches.done").touch()
    stages.update()
    stages.set_postfix_str("mapping")
    registered = tqdm(total=len(names), desc="registrations", unit="image", leave=False)
    tmp = work / "mapping.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    best, options = incremental_model(
        db, images_dir, tmp, threads, camera is not None, lambda: registered.update()
    )
    registered.close()
    if best is None:
        raise ReconstructionError(f"{images_dir}: COLMAP registered no model")
    m = options.mapper
    bogus = {
        i
        for i, c in best.cameras.items()
        if c.has_bogus_params(m.min_focal_length_ratio, m.max_focal_length_ratio, m.max_extra_param)
    }
    registered = best.num_reg_images()
    for image_id in list(best.reg_image_ids()):  # images of implausible cameras are left out
        if best.images[image_id].camera_id in bogus:
            best.deregister_frame(best.images[image_id].frame_id)
    if best.num_reg_images() < max(MIN_REGISTERED, registered / 2):
        raise ReconstructionError(
            f"{images_dir}: COLMAP registered {registered} of {len(names)} images, "
            f"{best.num_reg_images()} with plausible intrinsics; expected at least "
            f"{MIN_REGISTERED} and half of them (too little baseline or texture?)"
        )
    out = work / "model.tmp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    best.write_binary(str(out))
    out.rename(model)
    shutil.rmtree(tmp)
    stages.update()
    stages.close()
    return model
