"""Read and write OANet's HDF5 layout of putative matches.

Layout: one top-level group per key, and in each group one float32 dataset per pair named
"0", "1", ...: ``xs`` (1, N, 4), ``ys`` (N, 1), ``Rs`` (3, 3), ``ts`` (3, 1), ``ratios`` (N,),
``mutuals`` (N,), ``cx1s``, ``cy1s``, ``cx2s``, ``cy2s`` (1,), ``f1s``, ``f2s`` (1, 2) as
[fx, fy].  corrnet may add the string groups ``image1s``/``image2s`` and, from
``data/prepare.py``, the per-match SIFT measurements ``sizes``, ``angles`` and ``dists``
(N, 2) (:data:`SIFT_KEYS`, docs/channels.md), which OANet ignores.
"""

from __future__ import annotations

import functools
import itertools
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from corrnet.atomic import atomic_path, check_regular_input, remove_stale_temporaries
from corrnet.channels import channel_keys, side_info_channels
from corrnet.constants import MAX_MATCHES
from corrnet.errors import UserError, one_line
from corrnet.geometry.checks import rotation_problem, translation_problem

from .sample import MIN_MATCHES, intrinsics, make_sample

REQUIRED_KEYS = ("xs", "ys", "Rs", "ts")
SIDE_INFO_KEYS = ("ratios", "mutuals")
"""The groups of the network's side information (Lowe ratio, mutual-NN flag)."""
INTRINSICS_KEYS = ("cx1s", "cy1s", "cx2s", "cy2s", "f1s", "f2s")
OPTIONAL_KEYS = SIDE_INFO_KEYS + INTRINSICS_KEYS
IMAGE_KEYS = ("image1s", "image2s")
MAX_COORDINATE = 100.0
"""Largest |x| a normalised coordinate may have: |x| = (u - cx) / f is below ~2 for ordinary
lenses and 100 is 89.4° off-axis; pixel coordinates (hundreds to thousands) exceed it."""
MAX_DATASET_VALUES = 2**25
"""Most values (128 MB of float32) any per-pair dataset may declare before it is read."""
MAX_PIXELS = 1e6
"""Largest focal length and |principal point| in pixels (a 100-megapixel telephoto image has
f ~ 10⁵); larger values are a unit or scale error."""
SAMPLE_KEYS = ("xs", "ys", "R", "t", "ratios", "mutuals", "K1", "K2")
"""Keys a sample needs to be written."""
SIFT_KEYS = ("sizes", "angles", "dists")
"""Optional per-match (N, 2) groups of what SIFT measured: keypoint size in image 1 and 2
(pixels, ``cv2.KeyPoint.size``), keypoint angle in image 1 and 2 (degrees, ``cv2.KeyPoint.angle``),
nearest and second-nearest L2 descriptor distance of the image-1 descriptor."""


class BadPairError(UserError):
    """A pair of an HDF5 file does not match the expected layout."""


def text_attribute(attrs: h5py.AttributeManager, name: str) -> str | None:
    """The HDF5 attribute ``name`` as text (bytes decoded); None when it is absent or not a
    single string (a number or an array is no text corrnet wrote)."""
    value = attrs.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _oanet_arrays(sample: dict, sift: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """A sample dictionary as OANet's per-pair float32 arrays, with the :data:`SIFT_KEYS`
    ``sift`` (N, 2) as well.

    Raises ValueError naming a missing key, or a key whose size does not fit its shape.
    """
    needed = (*SAMPLE_KEYS, *sift)
    missing = [k for k in needed if k not in sample]
    if missing:
        raise UserError(f"missing key(s) {missing}; expected {list(needed)}")
    n = len(sample["xs"])

    def f32(key: str, *shape: int) -> np.ndarray:
        a = np.asarray(sample[key], dtype=np.float32)
        if a.size != int(np.prod(shape)):
            raise UserError(f"{key}: expected shape {shape} (N = {n} from xs), got {a.shape}")
        return a.reshape(shape)

    K1, K2 = f32("K1", 3, 3), f32("K2", 3, 3)
    return {
        "xs": f32("xs", 1, n, 4),
        "ys": f32("ys", n, 1),
        "Rs": f32("R", 3, 3),
        "ts": f32("t", 3, 1),
        "ratios": f32("ratios", n),
        "mutuals": f32("mutuals", n),
        "cx1s": K1[0, 2].reshape(1),
        "cy1s": K1[1, 2].reshape(1),
        "cx2s": K2[0, 2].reshape(1),
        "cy2s": K2[1, 2].reshape(1),
        "f1s": np.array([[K1[0, 0], K1[1, 1]]], np.float32),
        "f2s": np.array([[K2[0, 0], K2[1, 1]]], np.float32),
        **{key: f32(key, n, 2) for key in sift},
    }


def write_pairs_hdf5(
    path: str | Path,
    samples: Iterable[dict],
    arrays: Callable[[dict, int], Mapping[str, np.ndarray | str]],
    groups: Sequence[str],
    total: int | None = None,
    desc: str = "writing",
    attrs: Mapping[str, str | int | float] | None = None,
    progress: bool = True,
) -> int:
    """Write samples, one dataset per pair named "0", "1", ... in each group; returns the count.

    ``arrays(sample, i)`` gives the datasets of pair i by group: every pair has those of
    ``groups`` (created even when there are no pairs); the others (strings, such as image
    paths) are written only when every pair has them.  A ``str`` is stored as an HDF5 string,
    anything else as it is.  A ValueError of ``arrays`` is raised again naming ``path`` and
    the pair.  The file is written to a temporary file beside ``path`` and renamed into
    place, so an interrupted run never leaves a partial file at ``path``; temporary files
    that killed writers left beside ``path`` are removed first.  ``attrs`` are stored as
    file attributes.
    """

    def put(group: h5py.Group, i: int, value: np.ndarray | str) -> None:
        dtype = h5py.string_dtype() if isinstance(value, str) else None
        group.create_dataset(str(i), data=value, dtype=dtype)

    count = 0
    remove_stale_temporaries(Path(path).parent)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(attrs or {})
            created = {k: f.create_group(k) for k in groups}
            deferred: dict[str, list[np.ndarray | str]] = {}
            for sample in tqdm(samples, total=total, desc=desc, leave=False, disable=not progress):
                try:
                    pair = arrays(sample, count)
                except ValueError as err:
                    raise UserError(f"{path}: pair {count}: {err}") from None
                for key, value in pair.items():
                    if key in created:
                        put(created[key], count, value)
                    elif len(deferred.setdefault(key, [])) == count:  # every pair so far has it
                        deferred[key].append(value)
                count += 1
            for key, values in deferred.items():
                if len(values) == count:
                    g = f.create_group(key)
                    for i, value in enumerate(values):
                        put(g, i, value)
    return count


def _oanet_pair(sample: dict, index: int, sift: Sequence[str] = ()) -> dict[str, np.ndarray | str]:
    """:func:`_oanet_arrays` and, where the sample has both, its image paths (for
    :func:`write_pairs_hdf5`, which gives the pair's ``index``; the layout does not store it)."""
    pair: dict[str, np.ndarray | str] = dict(_oanet_arrays(sample, sift))
    if "image1" in sample and "image2" in sample:
        pair.update(image1s=str(sample["image1"]), image2s=str(sample["image2"]))
    return pair


def write_oanet_hdf5(
    path: str | Path,
    samples: Iterable[dict],
    total: int | None = None,
    desc: str = "writing",
    attrs: dict[str, str | int | float] | None = None,
) -> int:
    """Write samples (sample dictionaries or equivalent numpy dicts) in OANet's layout.

    Written atomically by :func:`write_pairs_hdf5`.  Image paths are stored in the
    ``image1s``/``image2s`` groups when every sample has them; the :data:`SIFT_KEYS` that the
    first sample has are written for every pair (a later sample without one is an error).
    Returns the number of pairs.
    A sample with a missing or misshapen array raises ValueError naming ``path``, the pair
    and the key.  ``attrs`` are stored as file attributes (prepare's record of its inputs,
    where the poses come from).
    """
    samples = iter(samples)
    first = next(samples, None)
    sift = tuple(k for k in SIFT_KEYS if first is not None and k in first)
    return write_pairs_hdf5(
        path,
        itertools.chain([] if first is None else [first], samples),
        functools.partial(_oanet_pair, sift=sift),
        REQUIRED_KEYS + OPTIONAL_KEYS + sift,
        total,
        desc,
        attrs,
    )


def merge_oanet_hdf5(inputs: Iterable[str | Path], out: str | Path) -> int:
    """Write the pairs of every input file, in order, to ``out`` (atomically); returns the count.

    Each pair is read (and checked) by :class:`OANetPairs` and copied as stored: groups that
    the inputs lack stay absent (never zeros or identity intrinsics), and inputs whose
    optional groups differ are refused (ValueError naming both files and the groups).  Image
    paths are kept when every pair has them.  The attribute ``merged_from`` lists the inputs
    as ``path: pairs``.  A missing or malformed input raises as OANetPairs does.
    """
    datasets = [OANetPairs(path) for path in inputs]
    first, *others = datasets
    groups = set(OPTIONAL_KEYS + SIFT_KEYS).intersection(first.optional)
    for d in others:
        differ = sorted(
            groups.symmetric_difference(set(OPTIONAL_KEYS + SIFT_KEYS).intersection(d.optional))
        )
        if differ:
            raise UserError(
                f"{d.path}: has not the same groups as {first.path} (differing: {differ}); "
                f"merge only files with the same side information"
            )
    record = "; ".join(f"{d.path}: {len(d)}" for d in datasets)
    return write_pairs_hdf5(
        out,
        (d.stored(i) for d in datasets for i in range(len(d))),
        lambda pair, i: pair,
        REQUIRED_KEYS + tuple(k for k in OPTIONAL_KEYS if k in groups),
        sum(map(len, datasets)),
        desc="merging",
        attrs={"merged_from": record},
    )


class LazyHDF5:
    """An HDF5 file at ``self.path`` opened on first use, once per process: a forked or
    pickled copy (a DataLoader worker) opens its own handle.  A subclass checks the file once
    at construction with :meth:`_open_checked`, its own :meth:`_check_file` on the open file."""

    path: Path
    _file: h5py.File | None = None
    _pid: int | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def _open_checked(self) -> None:
        """Open ``self.path`` once and run :meth:`_check_file` on it.

        Raises FileNotFoundError when there is no file, OSError naming the file when it is
        not a regular file, not HDF5 or damaged, and what ``_check_file`` raises.
        """
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: HDF5 file not found")
        check_regular_input(self.path, "HDF5 file")  # not a FIFO or device
        try:
            file = h5py.File(self.path, "r")
        except OSError as err:
            raise OSError(f"{self.path}: cannot open as an HDF5 file ({one_line(err)})") from None
        try:
            with file as f:
                self._check_file(f)
        except (KeyError, RuntimeError, OSError) as err:  # h5py's errors of a damaged file
            raise OSError(f"{self.path}: damaged HDF5 file ({one_line(err)})") from None

    def _check_file(self, f: h5py.File) -> None:
        """Check the open file (its layout, groups, pairs); raises ValueError naming the file."""
        raise NotImplementedError

    def _check_groups(self, f: h5py.File, keys: Iterable[str]) -> None:
        """BadPairError naming the file and key unless each of ``keys`` present is a group."""
        for k in keys:
            if k in f and not isinstance(f[k], h5py.Group):
                raise BadPairError(
                    f"{self.path}: {k}: expected a group of per-pair datasets, got a dataset"
                )

    def _dataset(self, f: h5py.File, key: str, i: int) -> h5py.Dataset:
        """The dataset ``key/i`` of an open file, unread: BadPairError naming the file, the pair
        and the key when it is missing, a group, not of numbers (or strings, for the string
        groups), or declares more than :data:`MAX_DATASET_VALUES` values."""
        where = f"{self.path}: pair {i}: {key}/{i}"
        if key not in f or str(i) not in f[key]:
            raise BadPairError(f"{where}: missing dataset (expected one per pair)")
        try:
            obj = f[key][str(i)]
        except (KeyError, OSError, RuntimeError) as err:  # a damaged object header
            raise BadPairError(
                f"{self.path}: pair {i}: cannot read its datasets ({one_line(err)})"
            ) from None
        if not isinstance(obj, h5py.Dataset):
            raise BadPairError(f"{where}: expected a dataset, got a group")
        strings = key in IMAGE_KEYS or key == "names"
        if (obj.dtype.kind in "SUO") != strings or obj.dtype.kind not in "SUOfiub":
            expected = "a string" if strings else "numbers"
            raise BadPairError(f"{where}: expected {expected}, got dtype {obj.dtype}")
        if obj.size > MAX_DATASET_VALUES:
            raise BadPairError(
                f"{where}: declares shape {obj.shape}, more than {MAX_DATASET_VALUES} values"
            )
        return obj

    def _read_dataset(self, obj: h5py.Dataset, i: int) -> np.ndarray:
        """The values of a checked dataset; BadPairError naming the file and pair if damaged."""
        try:
            return obj[()]
        except (KeyError, OSError, RuntimeError, TypeError) as err:  # a damaged dataset
            raise BadPairError(
                f"{self.path}: pair {i}: cannot read its datasets ({one_line(err)})"
            ) from None

    def _pair_count(self, f: h5py.File, required: Sequence[str]) -> int:
        """The number of pairs of an open file, whose groups ``required`` must all exist and hold
        as many pairs as the first; raises BadPairError naming the file and the group."""
        missing = [k for k in required if k not in f]
        if missing:
            raise BadPairError(
                f"{self.path}: missing key(s) {missing}; expected groups "
                f"{list(required)} (found {sorted(f.keys())})"
            )
        self._check_groups(f, required)
        n = len(f[required[0]])
        for k in required:
            if len(f[k]) != n:
                raise BadPairError(
                    f"{self.path}: group {k!r} has {len(f[k])} pairs, "
                    f"expected {n} like {required[0]!r}"
                )
        return n


class OANetPairs(LazyHDF5, Dataset):
    """Pairs of an OANet-layout HDF5 file as corrnet sample dictionaries.

    The file is opened lazily, once per process (re-opened after a fork), so the dataset
    works in DataLoader workers.  Pairs whose data are malformed (wrong shapes, non-finite
    coordinates, fewer than ``min_matches`` matches) raise :class:`BadPairError` naming the
    file, pair and expectation when ``on_bad="raise"``; with ``on_bad="skip"`` every pair is
    checked once at construction and the bad ones are left out with a warning.

    Args:
        path: HDF5 file.
        side_info: the network's input channels after the coordinates (a list of names of
            :data:`corrnet.channels.CHANNELS`; True: ratio and mutual): ``features`` is
            :func:`corrnet.channels.network_input` of them, (N, 4 + C).
        on_bad: "raise" or "skip".
        min_matches: fewest matches a valid pair has.
    A file that lacks a group the channels need is refused with one line naming the file and
    the keys (zeros would pass, say, for perfectly distinctive, never mutual matches); groups
    no channel needs may be absent: missing ``ratios``/``mutuals`` read as zeros, missing
    ``sizes``/``angles``/``dists`` are left out of the sample.
    Missing intrinsics read as the identity (the coordinates are already normalised);
    :meth:`lacks` tells which optional groups a file has not.
    """

    def __init__(
        self,
        path: str | Path,
        side_info: bool | Sequence[str] = False,
        on_bad: str = "raise",
        min_matches: int = MIN_MATCHES,
    ) -> None:
        if on_bad not in ("raise", "skip"):
            raise ValueError(f"on_bad: expected 'raise' or 'skip', got {on_bad!r}")
        self.path, self.side_info, self.on_bad = Path(path), side_info, on_bad
        self.channels = side_info_channels(side_info)
        self.min_matches = min_matches
        self._open_checked()

    def _check_file(self, f: h5py.File) -> None:
        """Check the groups of an open file and find the pairs (all, or the valid ones)."""
        self.groups = frozenset(f.keys())
        needed = channel_keys(self.side_info)
        if needed:
            self.require(
                needed,
                f"the network's side_info input (channels {list(self.channels)}); use weights "
                f"without them, or a file that has them (data/prepare.py writes them)",
            )
        self.required = REQUIRED_KEYS + needed
        n = self._pair_count(f, self.required)
        self.optional = tuple(k for k in OPTIONAL_KEYS + SIFT_KEYS + IMAGE_KEYS if k in f)
        self._check_groups(f, self.optional)
        self.indices = list(range(n))
        if self.on_bad == "skip":
            self.indices = [
                i
                for i in tqdm(range(n), desc=f"checking {self.path.name}", leave=False)
                if self._valid(f, i)
            ]
            if len(self.indices) < n:
                warnings.warn(
                    f"{self.path}: skipped {n - len(self.indices)} of {n} bad pairs "
                    f"(wrong shapes, NaN, bad ground truth or < {self.min_matches} matches)",
                    stacklevel=3,
                )

    def __len__(self) -> int:
        return len(self.indices)

    def lacks(self, keys: Sequence[str]) -> list[str]:
        """Those of the groups ``keys`` that the file has not."""
        return [k for k in keys if k not in self.groups]

    def require(self, keys: Sequence[str], why: str) -> None:
        """BadPairError ``<file>: missing key(s) [...], <why>`` unless the file has every group
        ``keys``."""
        lacking = self.lacks(keys)
        if lacking:
            raise BadPairError(f"{self.path}: missing key(s) {lacking}, {why}")

    def _read(self, f: h5py.File, i: int) -> dict[str, np.ndarray]:
        """Arrays of pair i, checked; raises BadPairError naming the file, pair and key.

        Every group the file has must hold the pair (a group with some pairs and not others is
        an error, never zeros); declared shapes and types are checked before anything is read.
        """
        datasets = {k: self._dataset(f, k, i) for k in self.required + self.optional}
        reason = self._shape_problem({k: d.shape for k, d in datasets.items()})
        if reason is None:
            a = {k: self._read_dataset(d, i) for k, d in datasets.items()}
            reason = self._problem(a)
        if reason is not None:
            raise BadPairError(f"{self.path}: pair {i}: {reason}")
        return a

    def _shape_problem(self, declared: dict[str, tuple[int, ...]]) -> str | None:
        """None when the declared shapes of a pair's datasets are valid, else the key and what
        was expected."""
        xs = declared["xs"]
        if len(xs) != 3 or xs[0] != 1 or xs[2] != 4:
            return f"xs: expected shape (1, N, 4), got {xs}"
        n = xs[1]
        if n < self.min_matches:
            return f"xs: expected at least {self.min_matches} matches, got {n}"
        if n > MAX_MATCHES:
            return f"xs: declares {n} matches, expected at most {MAX_MATCHES}"
        shapes = {
            "ys": [(n, 1), (n,)],
            "Rs": [(3, 3)],
            "ts": [(3, 1), (3,)],
            "ratios": [(n,), (n, 1)],
            "mutuals": [(n,), (n, 1)],
            "cx1s": [(1,), ()],
            "cy1s": [(1,), ()],
            "cx2s": [(1,), ()],
            "cy2s": [(1,), ()],
            "f1s": [(1, 2), (2,)],
            "f2s": [(1, 2), (2,)],
            **{key: [(n, 2)] for key in SIFT_KEYS},
        }
        for key, allowed in shapes.items():
            if key in declared and declared[key] not in allowed:
                expected = " or ".join(map(str, allowed))
                return f"{key}: expected shape {expected}, got {declared[key]}"
        return None

    def _problem(self, a: dict[str, np.ndarray]) -> str | None:
        """None when the values of a pair (of checked shapes) are valid, else the key and what
        was expected: finite numbers, ``ys`` >= 0, ``ratios`` in [0, 1], ``mutuals`` 0 or 1,
        normalised ``xs``, a rotation, a non-zero translation, focal lengths in (0,
        :data:`MAX_PIXELS`] and principal points within ±MAX_PIXELS."""
        xs = np.asarray(a["xs"])
        for key in ("xs", "ys", "ratios", "mutuals", "cx1s", "cy1s", "cx2s", "cy2s", *SIFT_KEYS):
            if key in a and not np.isfinite(a[key]).all():
                return f"{key}: expected finite values, got NaN or inf"
        ranges = {
            "sizes": (lambda v: v > 0, "positive keypoint sizes (pixels)"),
            "dists": (lambda v: v >= 0, "descriptor distances >= 0"),
            "ys": (lambda v: v >= 0, "epipolar distances >= 0"),
            "ratios": (lambda v: (v >= 0) & (v <= 1), "Lowe ratios in [0, 1]"),
            "mutuals": (lambda v: (v == 0) | (v == 1), "mutual-NN flags 0 or 1"),
            **{
                k: (lambda v: np.abs(v) <= MAX_PIXELS, f"|principal point| <= {MAX_PIXELS:g} px")
                for k in ("cx1s", "cy1s", "cx2s", "cy2s")
            },
            **{
                k: (
                    lambda v: (v > 0) & (v <= MAX_PIXELS),
                    f"positive focal lengths <= {MAX_PIXELS:g} px",
                )
                for k in ("f1s", "f2s")
            },
        }
        for key, (ok, expected) in ranges.items():
            if key in a:
                v = np.asarray(a[key], np.float64)
                bad = ~ok(v)
                if bad.any():
                    return f"{key}: expected {expected}, got {v[bad].reshape(-1)[0]:g}"
        largest = float(np.abs(xs).max())
        if largest > MAX_COORDINATE:
            return (
                f"xs: expected normalised coordinates (|x| <= {MAX_COORDINATE:g}), got "
                f"|x| up to {largest:.3g} (pixels? divide by the focal length)"
            )
        problems = {"Rs": rotation_problem(a["Rs"]), "ts": translation_problem(a["ts"])}
        return next((f"{key}: {p}" for key, p in problems.items() if p is not None), None)

    def _valid(self, f: h5py.File, i: int) -> bool:
        try:
            self._read(f, i)
        except BadPairError:
            return False
        return True

    def stored(self, idx: int) -> dict[str, np.ndarray | str]:
        """The datasets of pair ``idx`` as stored (checked; the file's groups only), image
        paths as str."""
        a = self._read(self._h5(), self.indices[idx])
        for key in IMAGE_KEYS:
            if key in a:
                a[key] = a[key].decode() if isinstance(a[key], bytes) else str(a[key])
        return a

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor | str]:
        i = self.indices[idx]
        a = self.stored(idx)
        n = a["xs"].shape[1]
        zeros = np.zeros(n, np.float32)

        def K(c: str, fk: str) -> np.ndarray:
            if f"cx{c}s" not in a or fk not in a:
                return np.eye(3)
            fx, fy = np.asarray(a[fk]).reshape(2)
            return intrinsics(
                fx, fy, float(np.ravel(a[f"cx{c}s"])[0]), float(np.ravel(a[f"cy{c}s"])[0])
            )

        image1, image2 = a.get("image1s"), a.get("image2s")
        return make_sample(
            a["xs"].reshape(n, 4),
            a["ys"].reshape(n),
            a["Rs"],
            a["ts"].reshape(3),
            a.get("ratios", zeros).reshape(n),
            a.get("mutuals", zeros).reshape(n),
            K("1", "f1s"),
            K("2", "f2s"),
            i,
            self.side_info,
            image1,
            image2,
            {k: a[k] for k in SIFT_KEYS if k in a},
        )
