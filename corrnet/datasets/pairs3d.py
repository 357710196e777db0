"""3-D correspondences between two point clouds: FPFH matching, labels, the HDF5 layout.

A *pair* is a source cloud (scan 1) and a target cloud (scan 2), each in its own camera frame
(metres), and the ground-truth rigid transform X₂ = R X₁ + t.  Both clouds are voxel
downsampled (:data:`VOXEL_SIZE`), get normals and FPFH features (Rusu et al., ICRA 2009) from
Open3D, and every one of up to ``num_matches`` source points (a seeded random subset) is
matched to its nearest neighbour in FPFH space among the target points.  A match is an
inlier when the ground truth moves its source point within :data:`INLIER_THRESHOLD` of its
target point (2 voxels, as 3DMatch-style benchmarks at 5 cm voxels use; Choy et al., DGR,
CVPR 2020, label with 10 cm at 5 cm voxels).

**HDF5 layout of 3-D pairs** (``data/prepare3d.py`` writes it), as OANet's: one top-level
group per key and one float32 dataset per pair named ``"0"``, ``"1"``, ...:
``xs`` (1, N, 6) [x1, y1, z1, x2, y2, z2] metres, each point in its own cloud's frame;
``ys`` (N, 1) ‖R x₁ + t − x₂‖ in metres (float64 from the stored float32 points, rounded);
``Rs`` (3, 3), ``ts`` (3, 1) metres; ``ratios`` (N,) FPFH distance to the nearest over the
second-nearest target feature; ``mutuals`` (N,) 1.0 where the target point's nearest source
feature is the match's own source point; ``overlaps`` (1,) the pair's overlap
(:func:`overlap`); ``cloud1s`` (M₁, 3), ``cloud2s`` (M₂, 3) the downsampled clouds;
string groups ``names``.  File attributes: ``corrnet_layout`` = :data:`LAYOUT` (what tells
a 3-D file from an OANet one), ``voxel_size``, ``inlier_threshold``, ``min_overlap``,
``source``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from corrnet.channels import network_input
from corrnet.constants import MIN_RIGID_MATCHES, NUM_MATCHES_3D
from corrnet.errors import UserError
from corrnet.geometry.checks import rotation_problem

from .oanet_hdf5 import LazyHDF5, text_attribute, write_pairs_hdf5

LAYOUT = "corrnet-pairs3d"
VOXEL_SIZE = 0.05
"""Voxel edge of the downsampled clouds, metres."""
NORMAL_RADIUS_VOXELS = 2
FPFH_RADIUS_VOXELS = 5
"""Search radii of the normals and of FPFH, in voxels: Open3D's registration tutorial settings."""
FPFH_MAX_NN = 100
INLIER_THRESHOLD = 2 * VOXEL_SIZE
"""A match is an inlier when ‖R x₁ + t − x₂‖ < 10 cm."""
OVERLAP_RADIUS = 2 * VOXEL_SIZE
MAX_METRES = 1e4
"""Largest |coordinate| and |translation| of a 3-D pair, metres (scans are metres to
kilometres across; 1e30 is a unit or storage error)."""
PER_PAIR_KEYS = ("xs", "ys", "Rs", "ts", "ratios", "mutuals", "overlaps", "cloud1s", "cloud2s")


@dataclass
class Fragment:
    """A downsampled cloud: points (M, 3) float64 metres and FPFH features (M, 33) float32."""

    points: np.ndarray
    features: np.ndarray


def _nearest(
    a: torch.Tensor, b: torch.Tensor, k: int = 1, chunk: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances and indices (A, k) of the k nearest rows of b (B, D) for each row of a (A, D)."""
    found = [torch.cdist(part, b).topk(k, dim=-1, largest=False) for part in a.split(chunk)]
    return torch.cat([f.values for f in found]), torch.cat([f.indices for f in found])


def describe(points: np.ndarray, voxel: float = VOXEL_SIZE) -> Fragment:
    """Voxel downsampling, normals and FPFH of a cloud (P, 3) metres, with Open3D."""
    import open3d as o3d

    reg = o3d.pipelines.registration
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    cloud = cloud.voxel_down_sample(voxel)
    search = o3d.geometry.KDTreeSearchParamHybrid
    cloud.estimate_normals(search(radius=NORMAL_RADIUS_VOXELS * voxel, max_nn=30))
    fpfh = reg.compute_fpfh_feature(
        cloud, search(radius=FPFH_RADIUS_VOXELS * voxel, max_nn=FPFH_MAX_NN)
    )
    return Fragment(np.asarray(cloud.points).copy(), np.ascontiguousarray(fpfh.data.T, np.float32))


def overlap(
    points1: np.ndarray,
    points2: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    radius: float = OVERLAP_RADIUS,
) -> float:
    """The smaller of the two fractions: source points (M₁, 3) that the ground truth moves
    within ``radius`` of a target point (M₂, 3), and target points within it of a moved
    source point (Open3D's nearest-neighbour distances)."""
    import open3d as o3d

    cloud = lambda p: o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(p, np.float64)))
    moved, target = cloud(np.asarray(points1, np.float64) @ R.T + t), cloud(points2)
    d12 = np.asarray(moved.compute_point_cloud_distance(target))
    d21 = np.asarray(target.compute_point_cloud_distance(moved))
    return float(min((d12 < radius).mean(), (d21 < radius).mean()))


def residuals(xs: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """‖R x₁ + t − x₂‖ in float64 of matches xs (N, 6), R (3, 3), t (3,) -> (N,) metres."""
    xs = np.asarray(xs, np.float64)
    return np.linalg.norm(
        xs[:, :3] @ np.asarray(R, np.float64).T + np.asarray(t, np.float64).reshape(3) - xs[:, 3:],
        axis=1,
    )


def match_fragments(
    frag1: Fragment,
    frag2: Fragment,
    R: np.ndarray,
    t: np.ndarray,
    num_matches: int = NUM_MATCHES_3D,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Putative matches of a pair and their labels, as the arrays of one HDF5 pair.

    Up to ``num_matches`` source points (a random subset fixed by ``seed``), each matched to
    its nearest target point in FPFH space.  Returns float32 ``xs`` (N, 6), ``ys`` (N,),
    ``ratios``, ``mutuals`` (N,), float64 ``R``, ``t`` (3,) and the clouds ``cloud1``,
    ``cloud2``; the caller adds the pair's ``overlap`` (:func:`overlap`).
    """
    rng = np.random.default_rng(seed)
    m1 = len(frag1.points)
    chosen = np.sort(rng.choice(m1, size=min(num_matches, m1), replace=False))
    f1, f2 = torch.from_numpy(frag1.features), torch.from_numpy(frag2.features)
    dist, idx = _nearest(f1[chosen], f2, k=2)
    nn = idx[:, 0].numpy()
    targets, inverse = np.unique(nn, return_inverse=True)
    back = _nearest(f2[targets], f1)[1][:, 0].numpy()[inverse]  # target -> source NN
    xs = np.concatenate([frag1.points[chosen], frag2.points[nn]], 1).astype(np.float32)
    R, t = np.asarray(R, np.float64), np.asarray(t, np.float64).reshape(3)
    ratios = (dist[:, 0] / dist[:, 1].clamp_min(1e-12)).numpy()
    return {
        "xs": xs,
        "ys": residuals(xs, R, t).astype(np.float32),
        "R": R,
        "t": t,
        "ratios": ratios.astype(np.float32),
        "mutuals": (back == chosen).astype(np.float32),
        "cloud1": frag1.points.astype(np.float32),
        "cloud2": frag2.points.astype(np.float32),
    }


def _pair_arrays(pair: dict, index: int) -> dict[str, np.ndarray | str]:
    """Pair ``index`` (a dict of :func:`match_fragments` with ``overlap`` and an optional
    ``name``, by default the index) as the float32 arrays and the name of the 3-D layout."""
    n = len(pair["xs"])
    arrays = {
        "xs": np.reshape(pair["xs"], (1, n, 6)),
        "ys": np.reshape(pair["ys"], (n, 1)),
        "Rs": pair["R"],
        "ts": np.reshape(pair["t"], (3, 1)),
        "ratios": pair["ratios"],
        "mutuals": pair["mutuals"],
        "overlaps": np.reshape(pair["overlap"], (1,)),
        "cloud1s": pair["cloud1"],
        "cloud2s": pair["cloud2"],
    }
    return {
        **{k: np.asarray(v, np.float32) for k, v in arrays.items()},
        "names": str(pair.get("name", index)),
    }


def write_pairs3d(
    path: str | Path,
    pairs: Iterable[dict],
    total: int | None = None,
    attrs: dict[str, str | int | float] | None = None,
    progress: bool = True,
) -> int:
    """Write pairs (dicts of :func:`match_fragments` plus ``overlap`` and an optional ``name``)
    in the 3-D layout, atomically (:func:`~corrnet.datasets.oanet_hdf5.write_pairs_hdf5`).
    Returns the number of pairs."""
    layout = {
        "corrnet_layout": LAYOUT,
        "voxel_size": VOXEL_SIZE,
        "inlier_threshold": INLIER_THRESHOLD,
    }
    return write_pairs_hdf5(
        path,
        pairs,
        _pair_arrays,
        PER_PAIR_KEYS + ("names",),
        total,
        "pairs",
        {**layout, **(attrs or {})},
        progress,
    )


def is_pairs3d(path: str | Path) -> bool:
    """Whether ``path`` is an HDF5 file in the 3-D layout (its ``corrnet_layout`` attribute)."""
    try:
        with h5py.File(path, "r") as f:
            return text_attribute(f.attrs, "corrnet_layout") == LAYOUT
    except OSError:
        return False


def make_sample3d(
    xs: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    ratios: np.ndarray,
    mutuals: np.ndarray,
    index: int,
    side_info: bool | Sequence[str] = False,
    threshold: float = INLIER_THRESHOLD,
) -> dict[str, torch.Tensor]:
    """The sample dictionary of a 3-D pair (as :mod:`corrnet.datasets.sample`'s, 6-D).

    ``xs`` (N, 6) float32 metres, ``ys`` (N,) residuals (float64 from ``xs``, rounded),
    ``labels`` (N,) 1.0 where the float64 residual is below ``threshold``, ``R`` (3, 3),
    ``t`` (3,) metres, ``ratios``, ``mutuals`` (N,), ``index``, ``features`` (N, 6) or
    (N, 6 + C) with the channels of ``side_info`` (True: [ratio, mutual]; 3-D pairs have no
    other per-match keys).
    """
    as32 = lambda a: torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))
    xs32 = np.asarray(xs, np.float32)
    ys = residuals(xs32, R, t)
    sample = {
        "xs": as32(xs32),
        "ys": as32(ys),
        "labels": as32(ys < threshold),
        "R": as32(R),
        "t": as32(np.reshape(t, 3)),
        "ratios": as32(ratios),
        "mutuals": as32(mutuals),
        "index": torch.tensor(index, dtype=torch.int64),
    }
    sample["features"] = network_input(sample["xs"], sample, side_info)
    return sample


class Pairs3D(LazyHDF5, Dataset):
    """Pairs of a 3-D HDF5 file (module docstring) as sample dictionaries (:func:`make_sample3d`).

    Opened lazily once per process (DataLoader workers re-open it).  A malformed pair raises
    ValueError naming the file, the pair, the key and what was expected: shapes, at least
    three matches, finite points, ``Rs`` a rotation, finite ``ts``.  ``clouds(i)`` returns
    the two downsampled clouds of pair i.
    """

    def __init__(self, path: str | Path, side_info: bool | Sequence[str] = False) -> None:
        self.path, self.side_info = Path(path), side_info
        self._open_checked()

    def _check_file(self, f: h5py.File) -> None:
        """Check the layout and the groups of an open file; read its length and attributes."""
        if text_attribute(f.attrs, "corrnet_layout") != LAYOUT:
            raise UserError(
                f"{self.path}: not a 3-D pairs file (expected the attribute "
                f"corrnet_layout = {LAYOUT!r}, written by data/prepare3d.py)"
            )
        self.length = self._pair_count(f, PER_PAIR_KEYS[:4])
        self.threshold = self._length_attribute(f, "inlier_threshold", INLIER_THRESHOLD)
        self.voxel_size = self._length_attribute(f, "voxel_size", VOXEL_SIZE)

    def _length_attribute(self, f: h5py.File, name: str, default: float) -> float:
        """The file's attribute ``name`` (``default`` when absent), a length in metres; raises
        UserError naming the file and the attribute unless it is one number in
        (0, :data:`MAX_METRES`]."""
        value = f.attrs.get(name, default)
        try:
            number = float(value) if np.ndim(value) == 0 else np.nan
        except (TypeError, ValueError):
            number = np.nan
        if not 0 < number <= MAX_METRES:
            raise UserError(
                f"{self.path}: attribute {name}: expected a length in (0, {MAX_METRES:g}] m, "
                f"got {value}"
            )
        return number

    def __len__(self) -> int:
        return self.length

    def _array(self, key: str, i: int) -> np.ndarray:
        """Dataset ``key/i`` in float64, read after its kind, type and size are checked."""
        return np.asarray(self._read_dataset(self._dataset(self._h5(), key, i), i), np.float64)

    def name(self, i: int) -> str:
        """The pair's name (``frame-i/frame-j`` for RGB-D pairs)."""
        f = self._h5()
        if "names" in f and str(i) in f["names"]:
            value = f["names"][str(i)][()]
            return value.decode() if isinstance(value, bytes) else str(value)
        return str(i)

    def clouds(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The downsampled source (M₁, 3) and target (M₂, 3) clouds of pair i, metres."""
        return self._array("cloud1s", i), self._array("cloud2s", i)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.length:
            raise IndexError(f"{self.path}: pair {i} out of range (0..{self.length - 1})")
        xs, R, t = self._array("xs", i), self._array("Rs", i), self._array("ts", i)
        problem = None
        if xs.ndim != 3 or xs.shape[0] != 1 or xs.shape[2] != 6:
            problem = f"xs: expected shape (1, N, 6) [x1, y1, z1, x2, y2, z2], got {xs.shape}"
        elif xs.shape[1] < MIN_RIGID_MATCHES:
            problem = f"xs: expected at least {MIN_RIGID_MATCHES} matches, got {xs.shape[1]}"
        elif not np.isfinite(xs).all():
            problem = "xs: expected finite points, got NaN or inf"
        elif np.abs(xs).max() > MAX_METRES:
            problem = f"xs: expected |coordinates| <= {MAX_METRES:g} m, got {np.abs(xs).max():.3g}"
        elif (rotation := rotation_problem(R)) is not None:
            problem = f"Rs: {rotation}"
        elif t.size != 3 or not np.isfinite(t).all() or np.abs(t).max() > MAX_METRES:
            problem = (
                f"ts: expected 3 finite values within ±{MAX_METRES:g} m, "
                f"got {t.reshape(-1).tolist()}"
            )
        if problem is not None:
            raise UserError(f"{self.path}: pair {i}: {problem}")
        n = xs.shape[1]
        f = self._h5()
        side = {
            k: self._array(k, i).reshape(-1) if k in f else np.zeros(n)
            for k in ("ratios", "mutuals")
        }
        for k, v in side.items():
            if v.shape != (n,):
                raise UserError(
                    f"{self.path}: pair {i}: {k}: expected {n} values (one per match), got {v.size}"
                )
            ok = (v == 0) | (v == 1) if k == "mutuals" else (v >= 0) & (v <= 1)  # NaN fails
            if not ok.all():
                expected = "flags 0 or 1" if k == "mutuals" else "ratios in [0, 1]"
                raise UserError(f"{self.path}: pair {i}: {k}: expected {expected}")
        return make_sample3d(
            xs.reshape(n, 6),
            R,
            t.reshape(3),
            side["ratios"],
            side["mutuals"],
            i,
            self.side_info,
            self.threshold,
        )
