"""Many pairs in one run: a pairs list in, per-pair matches and poses out, resumable.

    python -m corrnet.pairs --pairs PAIRS.txt --images DIR --out OUT [--intrinsics FILE]
                            [--checkpoint F] [--device D] [--threshold PX] [--batch-size B]
                            [--workers W] [--overwrite]
    corrnet match --pairs PAIRS.txt --images DIR --out OUT ...   (the same, as the console command)
    torchrun --nproc_per_node K -m corrnet.pairs ...      (the same, split over K processes)

PAIRS.txt: two image names per line, relative to DIR (hloc's format); ``#`` starts a comment,
blank lines are skipped.  ``--intrinsics``: a file of ``NAME FX FY CX CY`` lines (pixels,
pixel-centre convention) or a COLMAP text model folder (``cameras.txt`` and ``images.txt``;
the pinhole part of its cameras); an image without intrinsics gets those ``corrnet.match``
approximates (:func:`corrnet.match.approximate_intrinsics`), with a warning.

The pipeline per pair is ``corrnet.match``'s: SIFT (or ``--detector``) once per image (kept in
``OUT/features.h5``), nearest-neighbour matches with ratio and mutual flag, then
:meth:`corrnet.verifier.Verifier.verify_many` (the network batched over ``--batch-size``
pairs, PoseLib in the run's pool of ``--workers`` processes, ``confident`` as
:func:`corrnet.verifier.confidence` says).  Outputs (:data:`RESULT_FILES`): ``features.h5`` (per
image), ``matches.h5`` (per pair, group ``<image1>/<image2>`` with each name
:func:`encode_name`-d) and ``poses.csv`` (one row per pair, pairs-file order).

Resume: pairs are processed in chunks of ``--batch-size`` pairs fixed by the pairs file;
each finished chunk is one file in ``OUT/partial/chunks/`` written to a temporary and renamed,
so a killed run loses at most the chunks in progress, and the same command resumes from the
finished ones.  The final files are merged from the chunks and renamed into place; the
result equals that of an uninterrupted run.  ``OUT/inputs.json`` records a digest of the inputs
(pairs, image contents, intrinsics, weights, estimator settings, batch size): an OUT made
from other inputs is refused unless ``--overwrite``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every process takes every K-th image and chunk
(``torch.distributed`` with gloo on the CPU, nccl on CUDA, one GPU per local rank); after a
barrier rank 0 merges, giving the files one process would.  OUT must be on a file system all
processes share.

Bad input (a pairs line without two names, an image not in DIR, a bad intrinsics line, an OUT
of other inputs) ends with one line ``PROG: error: FILE: line N: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from corrnet.arguments import add_detector, add_keypoint_count
from corrnet.atomic import atomic_path, remove_stale_temporaries
from corrnet.constants import DEFAULT_DETECTOR, NUM_FEATURES
from corrnet.datasets import prepare
from corrnet.datasets.oanet_hdf5 import text_attribute
from corrnet.errors import UserError, run_command
from corrnet.images import read_image
from corrnet.match import (
    ApproximateIntrinsicsWarning,
    _Parser,
    approximate_intrinsics,
    as_intrinsics,
    passes_ratios,
)
from corrnet.verifier import Verification, Verifier, as_device

PROTOCOL = "corrnet-pairs-2"
"""Changes whenever the files would differ for the same inputs."""
RESULT_FILES = ("features.h5", "matches.h5", "poses.csv")
INPUTS_FILE = "inputs.json"
WORK_DIR = "partial"
INPUTS_ATTR = prepare.INPUTS_ATTR
POSE_COLUMNS = (
    "image1",
    "image2",
    *(f"r{i}{j}" for i in (1, 2, 3) for j in (1, 2, 3)),
    "t1",
    "t2",
    "t3",
    "num_matches",
    "num_inliers",
    "confident",
)
"""Header of ``poses.csv``: R row-major, t unit (x2 = R x1 + t); confident 1 or 0."""
DIST_TIMEOUT = timedelta(hours=24)
"""How long a process waits at a barrier for the others (a phase may take hours)."""
STAGES = ("sift", "matching", "network", "estimator", "writing")


def encode_name(name: str) -> str:
    """An image name as one HDF5 link name: ``%`` and ``/`` percent-encoded (reversible with
    ``urllib.parse.unquote``); ``a/b.jpg`` -> ``a%2Fb.jpg``."""
    return name.replace("%", "%25").replace("/", "%2F")


def pair_group(name1: str, name2: str) -> str:
    """The group of a pair in ``matches.h5``: ``encode_name(name1)/encode_name(name2)``."""
    return f"{encode_name(name1)}/{encode_name(name2)}"


def _content_lines(path: Path) -> Iterable[tuple[int, str]]:
    """(1-based line number, text without comment) of the non-blank lines of a text file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read as a text file ({err})") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            yield n, line


def read_pairs(path: str | Path, images: str | Path) -> list[tuple[str, str]]:
    """The pairs of an hloc pairs file: two names per line, each an image file in ``images``.

    Raises ValueError / FileNotFoundError naming the file and line: not two names, a missing
    image, a pair listed twice, no pairs at all.
    """
    path, images = Path(path), Path(images)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pairs file")
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: no such image folder (--images)")
    pairs: list[tuple[str, str]] = []
    seen: dict[tuple[str, str], int] = {}
    for n, line in _content_lines(path):
        names = line.split()
        if len(names) != 2:
            raise UserError(
                f"{path}: line {n}: expected two image names, got {len(names)} ({line!r})"
            )
        for name in names:
            if not (images / name).is_file():
                raise FileNotFoundError(f"{path}: line {n}: {images / name}: no such image file")
        pair = (names[0], names[1])
        if pair in seen:
            raise UserError(f"{path}: line {n}: the pair {line!r} again (line {seen[pair]})")
        seen[pair] = n
        pairs.append(pair)
    if not pairs:
        raise UserError(f"{path}: no pairs (expected two image names per line)")
    return pairs


def _colmap_intrinsics(folder: Path) -> dict[str, np.ndarray]:
    """K (3, 3) of every image of a COLMAP text model (cameras.txt, images.txt): its camera's
    pinhole part in corrnet's pixel-centre convention; a distortion is ignored with a warning."""
    import pycolmap  # here: importing it installs signal handlers that pool workers inherit

    from corrnet.datasets.colmap import CAMERA_MODELS, PINHOLE_MODELS, pinhole_K

    cameras: dict[int, np.ndarray] = {}
    distorted = set()
    path = folder / "cameras.txt"
    for n, line in _content_lines(path):
        fields = line.split()
        try:
            cam_id, model, width, height = int(fields[0]), fields[1], int(fields[2]), int(fields[3])
            params = [float(v) for v in fields[4:]]
            if model not in CAMERA_MODELS:
                raise UserError(f"model {model}; expected one of {', '.join(CAMERA_MODELS)}")
            camera = pycolmap.Camera(model=model, width=width, height=height, params=params)
            if len(camera.params) != len(params):
                raise UserError(f"{len(params)} parameters for {model}")
        except (IndexError, ValueError, TypeError) as err:
            raise UserError(
                f"{path}: line {n}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS... ({err})"
            ) from None
        cameras[cam_id] = pinhole_K(camera)
        if model not in PINHOLE_MODELS:
            distorted.add(cam_id)
    path = folder / "images.txt"
    try:
        lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1)]
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read as a text file ({err})") from None
    lines = [(n, line) for n, line in lines if not line.lstrip().startswith("#")]
    Ks: dict[str, np.ndarray] = {}
    approximated = []
    for n, line in lines[::2]:  # each image line is followed by its (maybe empty) points line
        fields = line.split()
        if len(fields) < 10 or not fields[8].lstrip("-").isdigit():
            raise UserError(
                f"{path}: line {n}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME"
            )
        if int(fields[8]) not in cameras:
            raise UserError(f"{path}: line {n}: camera {fields[8]} is not in cameras.txt")
        name = " ".join(fields[9:])
        Ks[name] = cameras[int(fields[8])]
        if int(fields[8]) in distorted:
            approximated.append(name)
    if approximated:
        warnings.warn(
            f"{folder}: {len(approximated)} image(s) (first: {approximated[0]}) have a camera "
            f"with lens distortion; only its pinhole part is used",
            stacklevel=2,
        )
    return Ks


def read_intrinsics(path: str | Path) -> dict[str, np.ndarray]:
    """K (3, 3) pixels by image name from ``NAME FX FY CX CY`` lines or a COLMAP text model
    folder; ValueError naming the file and line for anything else."""
    path = Path(path)
    if path.is_dir():
        if not all((path / f).is_file() for f in ("cameras.txt", "images.txt")):
            raise FileNotFoundError(
                f"{path}: expected a COLMAP text model (cameras.txt, images.txt) or a file"
            )
        return _colmap_intrinsics(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such intrinsics file or folder")
    Ks: dict[str, np.ndarray] = {}
    for n, line in _content_lines(path):
        fields = line.split()
        where = f"{path}: line {n}"
        if len(fields) != 5:
            raise UserError(
                f"{where}: expected NAME FX FY CX CY (a name and 4 numbers), got "
                f"{len(fields) - 1} after the name"
            )
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise UserError(f"{where}: expected 4 numbers FX FY CX CY, got {fields[1:]}") from None
        if fields[0] in Ks:
            raise UserError(f"{where}: {fields[0]} has intrinsics on an earlier line")
        Ks[fields[0]] = as_intrinsics(values, where)
    return Ks


@dataclass
class RunStats:
    """What a run did: pairs in the list, pairs verified now, images with new features,
    confident poses among all pairs, seconds per stage (:data:`STAGES`; ``network`` the
    forward passes, ``estimator`` the rest of the verification) and wall seconds."""

    pairs: int = 0
    verified: int = 0
    images: int = 0
    confident: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall: float = 0.0


@dataclass(frozen=True)
class _Dist:
    """This process's place among the torchrun processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    """Where collectives run: the process's GPU under nccl, else the CPU."""

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()


def _dist_from_env() -> _Dist:
    """Rank, world size and local rank from torchrun's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    return _Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def verifier_name(verifier: Verifier) -> str:
    """What decides a verifier's results: the SHA-1 of the weights it may use and the
    estimator's settings."""
    digests = []
    for path in verifier.weight_files:
        with open(path, "rb") as f:
            digests.append(hashlib.file_digest(f, "sha1").hexdigest())
    e = verifier.estimator
    return (
        f"corrnet weights sha1 {' or '.join(digests)} + {e.name} {e.max_epipolar_error:g} px "
        f"seed {e.seed}"
    )


def inputs_digest(
    pairs: Sequence[tuple[str, str]],
    images: Path,
    given: dict[str, np.ndarray],
    verifier: str,
    batch_size: int,
    num_features: int = NUM_FEATURES,
    detector: str = DEFAULT_DETECTOR,
) -> str:
    """Digest of what the outputs are made from: protocols (with the detector and keypoint
    count), the verifier's name, the batch size, every image's name, content and given K (or
    "approximate") and the pairs in order."""
    lines = [
        PROTOCOL,
        prepare.protocol(num_features, detector),
        verifier,
        f"batch_size {batch_size}",
    ]
    for name in dict.fromkeys(n for p in pairs for n in p):
        K = given.get(name)
        k = "approximate" if K is None else np.asarray(K, np.float64).tobytes().hex()
        lines.append(f"{name}\t{prepare.image_digest(images / name)}\t{k}")
    lines += [f"{a}\t{b}" for a, b in pairs]
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()


def _recorded_digest(path: Path) -> str | None:
    """The digest an HDF5 output records (None: absent or unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            return text_attribute(f.attrs, INPUTS_ATTR)
    except OSError:
        return None


def _ours(out: Path) -> list[Path]:
    """The files and folders of a run in ``out`` that exist."""
    return [out / n for n in (*RESULT_FILES, INPUTS_FILE, WORK_DIR) if (out / n).exists()]


def check_out(out: Path, digest: str, overwrite: bool) -> bool:
    """Whether ``out`` already holds the finished result of these inputs; FileExistsError when
    it holds a run of other inputs (or of unknown ones) and not ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if overwrite or not _ours(out):
        return False
    try:
        recorded = json.loads((out / INPUTS_FILE).read_text()).get("digest")
    except (OSError, ValueError, AttributeError, RecursionError):
        recorded = None
    if recorded != digest:
        raise FileExistsError(
            f"{out}: holds a run of other inputs (pairs, images, intrinsics, weights, "
            f"threshold or batch size); pass --overwrite to replace it or choose another --out"
        )
    return (
        not (out / WORK_DIR).exists()
        and all(_recorded_digest(out / n) == digest for n in ("features.h5", "matches.h5"))
        and (out / "poses.csv").is_file()
    )


def _start(out: Path, digest: str, record: dict, overwrite: bool) -> None:
    """Rank 0 before any work: replace a run of other inputs (``overwrite``), remove killed
    writers' temporaries, record the inputs."""
    recorded = None
    if (out / INPUTS_FILE).is_file():
        recorded = json.loads((out / INPUTS_FILE).read_text()).get("digest")
    if overwrite and recorded != digest:
        (out / INPUTS_FILE).unlink(missing_ok=True)  # first: a half-cleared OUT is never resumed
        for path in _ours(out):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for sub in (out, out / WORK_DIR / "features", out / WORK_DIR / "chunks"):
        sub.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(sub)
    if recorded != digest:
        with atomic_path(out / INPUTS_FILE) as tmp:
            tmp.write_text(json.dumps({**record, "digest": digest}, indent=1) + "\n")


def _feature_file(out: Path, name: str) -> Path:
    return out / WORK_DIR / "features" / (hashlib.sha1(name.encode()).hexdigest()[:20] + ".npz")


def _chunk_file(out: Path, k: int) -> Path:
    return out / WORK_DIR / "chunks" / f"chunk-{k:06d}.h5"


def _features_job(task: tuple[Path, np.ndarray | None, Path, int, str]) -> None:
    """Features of one image (at most ``num_features`` keypoints of ``detector``) and its K
    (given, or approximated) into a .npz, atomically."""
    path, K, dest, num_features, detector = task
    img = read_image(path)
    kp, desc, scales, angles = prepare.detect_features(img, num_features, detector)
    source = "given"
    if K is None:
        K, source = approximate_intrinsics(path, img.shape[1], img.shape[0])
    with atomic_path(dest, suffix=".tmp.npz") as tmp:
        np.savez(
            tmp,
            keypoints=kp,
            descriptors=desc,
            scales=scales,
            angles=angles,
            K=K,
            intrinsics=source,
            size=np.array([img.shape[1], img.shape[0]]),
        )


def _merge_features(out: Path, names: Sequence[str], digest: str) -> None:
    """The per-image .npz files into ``out/features.h5`` (atomically), then remove them."""
    with atomic_path(out / "features.h5", suffix=".tmp.h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs[INPUTS_ATTR] = digest
            for name in names:
                with np.load(_feature_file(out, name)) as z:
                    g = f.create_group(encode_name(name))
                    for key in ("keypoints", "descriptors", "scales", "angles", "K"):
                        g.create_dataset(key, data=z[key])
                    g.attrs["name"] = name
                    g.attrs["intrinsics"] = str(z["intrinsics"])
                    g.attrs["size"] = z["size"]
    shutil.rmtree(out / WORK_DIR / "features")


_OPEN: dict[tuple[int, str, int], h5py.File] = {}
"""features.h5 files opened by this process, by (pid, path, inode): a forked worker or a
replaced file opens its own."""


def _features(path: Path, name: str) -> dict[str, np.ndarray | str]:
    """One image's group of features.h5 as numpy arrays (plus its ``intrinsics`` source)."""
    key = (os.getpid(), str(path), os.stat(path).st_ino)
    if key not in _OPEN:
        _OPEN[key] = h5py.File(path, "r")
    g = _OPEN[key][encode_name(name)]
    return {**{k: g[k][()] for k in g}, "intrinsics": g.attrs["intrinsics"]}


def _close_features() -> None:
    """Close the features.h5 files this process opened."""
    for key in [k for k in _OPEN if k[0] == os.getpid()]:
        _OPEN.pop(key).close()


@dataclass
class _Matched:
    """A pair's putative matches as :meth:`Verifier.verify` arguments, the keypoint indices
    (N, 2) of every match into features.h5 and the pair's own warnings."""

    pair: dict[str, np.ndarray]
    ids: np.ndarray
    warnings: list[str]


def _match_job(task: tuple[Path, str, str, bool]) -> _Matched:
    """Nearest-neighbour matches of a pair from features.h5 (``prepare.putative_matches``),
    with their ratios, mutual flags and distances where ``ratios``."""
    path, name1, name2, ratios = task
    f1, f2 = _features(path, name1), _features(path, name2)
    notes = [
        f"{name}: approximate intrinsics ({f['intrinsics']})"
        for name, f in ((name1, f1), (name2, f2))
        if f["intrinsics"] != "given"
    ]
    try:
        m = prepare.putative_matches(
            *(
                prepare.Features(f["keypoints"], f["descriptors"], f["scales"], f["angles"])
                for f in (f1, f2)
            ),
            f1["K"],
            f2["K"],
            "too few keypoints",
            (name1, name2),
        )
    except ValueError as err:  # too few keypoints: a pair without pose, not an error
        empty = np.zeros((0, 2))
        pair = dict(kpts1=empty, kpts2=empty, K1=f1["K"], K2=f2["K"])
        return _Matched(pair, np.zeros((0, 2), np.int64), [*notes, str(err)])
    pair = dict(kpts1=m.uv1, kpts2=m.uv2, K1=f1["K"], K2=f2["K"], **m.measurements(ratios))
    return _Matched(pair, np.column_stack([np.arange(len(m.nn)), m.nn]), notes)


def _write_chunk(
    path: Path,
    pairs: Sequence[tuple[str, str]],
    matched: Sequence[_Matched],
    results: Sequence[Verification],
) -> None:
    """A chunk's pairs, each in its ``pair_group``, into ``path`` atomically."""
    with atomic_path(path, suffix=".tmp.h5") as tmp:
        with h5py.File(tmp, "w") as f:
            for (name1, name2), m, r in zip(pairs, matched, results):
                g = f.create_group(pair_group(name1, name2))
                g.create_dataset("matches", data=np.hstack([m.pair["kpts1"], m.pair["kpts2"]]))
                g.create_dataset("keypoint_ids", data=m.ids)
                g.create_dataset("scores", data=np.asarray(r.scores, np.float32))
                g.create_dataset("kept", data=np.asarray(r.kept, bool))
                g.create_dataset("inliers", data=np.asarray(r.inliers, bool))
                for key in ("R", "t", "E"):
                    g.create_dataset(key, data=np.asarray(getattr(r, key), np.float64))
                g.attrs["image1"], g.attrs["image2"] = name1, name2
                g.attrs["num_inliers"] = int(r.num_inliers)
                g.attrs["confident"] = bool(r.confident)
                g.attrs["warnings"] = "\n".join([*m.warnings, *r.warnings])


def _pose_row(name1: str, name2: str, g: h5py.Group) -> list[str]:
    """A ``poses.csv`` row of a pair's group (floats as Python's shortest round-trip repr)."""
    numbers = [*g["R"][()].reshape(9), *g["t"][()].reshape(3)]
    return [
        name1,
        name2,
        *(repr(float(v)) for v in numbers),
        str(len(g["matches"])),
        str(int(g.attrs["num_inliers"])),
        str(int(bool(g.attrs["confident"]))),
    ]


def _merge_chunks(out: Path, chunks: Sequence[Sequence[tuple[str, str]]], digest: str) -> int:
    """The chunk files into ``matches.h5`` and ``poses.csv`` (each atomically), then remove
    the work folder.  Returns the number of confident poses."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(POSE_COLUMNS)
    confident = 0
    with atomic_path(out / "matches.h5", suffix=".tmp.h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs[INPUTS_ATTR] = digest
            for k, chunk in enumerate(chunks):
                with h5py.File(_chunk_file(out, k), "r") as src:
                    for name1, name2 in chunk:
                        group = pair_group(name1, name2)
                        parent = f.require_group(encode_name(name1))
                        src.copy(src[group], parent, name=encode_name(name2))
                        writer.writerow(_pose_row(name1, name2, src[group]))
                        confident += bool(src[group].attrs["confident"])
    with atomic_path(out / "poses.csv") as tmp:
        tmp.write_text(text.getvalue())
    shutil.rmtree(out / WORK_DIR)
    return confident


def _pool(workers: int) -> multiprocessing.pool.Pool | None:
    """A pool of ``workers`` processes (fork where available), None for one worker."""
    if workers <= 1:
        return None
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(workers, initializer=prepare._init_worker)


def run_pairs(
    pairs_file: str | Path,
    images: str | Path,
    out: str | Path,
    intrinsics: str | Path | None = None,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    threshold: float | None = None,
    batch_size: int = 16,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    num_features: int = NUM_FEATURES,
    detector: str = DEFAULT_DETECTOR,
) -> RunStats:
    """Verify every pair of ``pairs_file`` (module docstring); returns this process's stats.

    The :class:`Verifier` of ``checkpoint``, ``device`` and ``threshold`` and the pool of
    ``workers`` processes (features, matching, PoseLib) are made once, before the processes
    of a torchrun job connect.  ``detector``: as :func:`corrnet.match.match_images`'s.
    """
    start_wall = time.perf_counter()
    images, out = Path(images), Path(out)
    if batch_size < 1:
        raise UserError(f"--batch-size: expected a positive number of pairs, got {batch_size}")
    prepare.usable_detector(detector)
    pairs = read_pairs(pairs_file, images)
    given = read_intrinsics(intrinsics) if intrinsics is not None else {}
    names = list(dict.fromkeys(n for p in pairs for n in p))
    dist = _dist_from_env()
    dev = as_device(device)
    if dev.type == "cuda" and dist.world > 1:
        dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
        dist = _Dist(dist.rank, dist.world, dist.local_rank, dev)
    stats = RunStats(pairs=len(pairs))
    verifier = Verifier(checkpoint, dev, threshold)
    name = verifier_name(verifier)
    pool = _pool(workers)
    try:
        digest = inputs_digest(pairs, images, given, name, batch_size, num_features, detector)
        if check_out(out, digest, overwrite):
            stats.wall = time.perf_counter() - start_wall
            return stats
        if dist.world > 1:
            import torch.distributed as tdist

            tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=DIST_TIMEOUT)
        try:
            if dist.rank == 0:
                record = {
                    "pairs": str(pairs_file),
                    "images": str(images),
                    "intrinsics": None if intrinsics is None else str(intrinsics),
                    "verifier": name,
                    "batch_size": batch_size,
                    "num_pairs": len(pairs),
                    "num_features": num_features,
                    "detector": detector,
                }
                _start(out, digest, record, overwrite)
            dist.barrier()
            _run(
                out,
                pairs,
                names,
                images,
                given,
                digest,
                verifier,
                batch_size,
                pool,
                dist,
                stats,
                progress,
                num_features,
                detector,
            )
        finally:
            if dist.world > 1:
                import torch.distributed as tdist

                tdist.destroy_process_group()
    finally:
        if pool is not None:
            pool.close()  # queued tasks finish, the workers exit (no SIGTERM)
            pool.join()
        _close_features()
    stats.wall = time.perf_counter() - start_wall
    return stats


def _imap(pool: multiprocessing.pool.Pool | None, job: Callable, tasks: list) -> Iterable:
    return map(job, tasks) if pool is None else pool.imap_unordered(job, tasks)


def _run(
    out: Path,
    pairs: list[tuple[str, str]],
    names: list[str],
    images: Path,
    given: dict[str, np.ndarray],
    digest: str,
    verifier: Verifier,
    batch_size: int,
    pool: multiprocessing.pool.Pool | None,
    dist: _Dist,
    stats: RunStats,
    progress: bool,
    num_features: int,
    detector: str,
) -> None:
    """The two phases (features, then chunks of pairs), each split over the processes and
    merged by rank 0 after a barrier."""
    features = out / "features.h5"
    start = time.perf_counter()
    if _recorded_digest(features) != digest:
        mine = [
            (images / n, given.get(n), _feature_file(out, n), num_features, detector)
            for n in names[dist.rank :: dist.world]
            if not _feature_file(out, n).exists()
        ]
        bar = dict(
            total=len(mine), desc=detector.upper(), unit="image", disable=not progress or dist.rank
        )
        for _ in tqdm(_imap(pool, _features_job, mine), **bar):
            pass
        stats.images = len(mine)
        dist.barrier()
        if dist.rank == 0:
            _merge_features(out, names, digest)
        dist.barrier()
    stats.seconds["sift"] = time.perf_counter() - start
    if dist.rank == 0:
        with h5py.File(features, "r") as f:
            approximate = [n for n in names if f[encode_name(n)].attrs["intrinsics"] != "given"]
        if approximate:
            warnings.warn(
                f"{len(approximate)} of {len(names)} images without intrinsics (first: "
                f"{approximate[0]}); approximated as corrnet.match does, flagged in features.h5 "
                f"and in each pair's warnings in matches.h5",
                ApproximateIntrinsicsWarning,
                stacklevel=2,
            )

    chunks = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]
    todo = [
        k for k in range(dist.rank, len(chunks), dist.world) if not _chunk_file(out, k).exists()
    ]
    bar = tqdm(
        total=sum(len(chunks[k]) for k in todo),
        desc="pairs",
        unit="pair",
        disable=not progress or dist.rank != 0,
    )

    ratios = passes_ratios(detector, verifier)

    def submit(k: int):
        tasks = [(features, a, b, ratios) for a, b in chunks[k]]
        return map(_match_job, tasks) if pool is None else pool.map_async(_match_job, tasks)

    pending = submit(todo[0]) if todo else None
    for i, k in enumerate(todo):
        start = time.perf_counter()
        matched = list(pending) if pool is None else pending.get()
        stats.seconds["matching"] += time.perf_counter() - start
        if i + 1 < len(todo):
            pending = submit(todo[i + 1])  # the pool matches the next chunk meanwhile
        start = time.perf_counter()
        results = verifier.verify_many(
            [m.pair for m in matched], batch_size, 1, pool=pool, few_matches=True
        )
        network = sum(r.times_ms["network"] for r in results) / 1e3
        stats.seconds["network"] += network
        stats.seconds["estimator"] += time.perf_counter() - start - network
        start = time.perf_counter()
        _write_chunk(_chunk_file(out, k), chunks[k], matched, results)
        stats.seconds["writing"] += time.perf_counter() - start
        stats.verified += len(chunks[k])
        bar.update(len(chunks[k]))
    bar.close()
    if dist.world > 1:  # every process's counts, for rank 0's summary
        import torch.distributed as tdist

        counts = torch.tensor([stats.verified, stats.images], device=dist.device)
        tdist.all_reduce(counts)
        stats.verified, stats.images = (int(v) for v in counts.tolist())
    dist.barrier()
    if dist.rank == 0:
        start = time.perf_counter()
        stats.confident = _merge_chunks(out, chunks, digest)
        stats.seconds["writing"] += time.perf_counter() - start


def summary(stats: RunStats, out: Path) -> str:
    """The one stdout line of a run."""
    if stats.verified == 0 and stats.images == 0:
        return f"{out}: already holds the result of these {stats.pairs} pairs; nothing to do"
    stages = ", ".join(f"{s} {stats.seconds[s]:.1f} s" for s in STAGES)
    rate = stats.verified / stats.wall if stats.wall > 0 else math.nan
    return (
        f"{stats.pairs} pairs ({stats.verified} verified now, {stats.confident} confident poses) "
        f"in {stats.wall:.1f} s, {rate:.2f} pairs/s; {stages}; {out}"
    )


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = _Parser(prog=prog, description="Relative poses of the pairs of a pairs list.")
    parser.add_argument("--pairs", type=Path, required=True, help="pairs file: NAME1 NAME2 lines")
    parser.add_argument("--images", type=Path, required=True, help="folder the names refer to")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--intrinsics",
        type=Path,
        help="NAME FX FY CX CY lines, or a COLMAP text model folder (default: approximated)",
    )
    parser.add_argument("--checkpoint", type=Path, help="corrnet weights (default: shipped)")
    parser.add_argument("--device", default="cpu", help="torch device of the network (cpu)")
    parser.add_argument("--threshold", type=float, metavar="PX", help="PoseLib threshold (1 px)")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per forward pass (16)")
    add_keypoint_count(parser)
    add_detector(parser)
    parser.add_argument(
        "--workers", type=int, default=1, help="processes for the features, NN, PoseLib"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a run of other inputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.threshold is not None and not args.threshold > 0:
        parser.error(f"--threshold: expected a positive number of pixels, got {args.threshold:g}")
    if args.batch_size < 1:
        parser.error(f"--batch-size: expected a positive number, got {args.batch_size}")
    if args.workers < 1:
        parser.error(f"--workers: expected a positive number, got {args.workers}")
    return args


def main(argv: Sequence[str] | None = None, prog: str = "python -m corrnet.pairs") -> int:
    """Entry point; returns the exit status (0, or 2 for bad input)."""
    args = parse_args(argv, prog)

    def run() -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = run_pairs(
                args.pairs,
                args.images,
                args.out,
                args.intrinsics,
                args.checkpoint,
                args.device,
                args.threshold,
                args.batch_size,
                args.workers,
                args.overwrite,
                not args.quiet,
                args.num_features,
                args.detector,
            )
        rank = _dist_from_env().rank
        for w in caught:
            if rank == 0 and issubclass(w.category, UserWarning):
                print(f"{prog}: warning: {w.message}", file=sys.stderr)
        if rank == 0:
            print(summary(stats, args.out))
        return 0

    return run_command(prog, run)


if __name__ == "__main__":
    sys.exit(main())
