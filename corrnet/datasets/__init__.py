"""Datasets of putative matches: OANet HDF5 files, synthetic pairs, preparation from images;
3-D pairs of point clouds (HDF5, RGB-D sequences, synthetic rooms)."""

from .collate import PairCollator, collate_pairs
from .oanet_hdf5 import BadPairError, OANetPairs, merge_oanet_hdf5, write_oanet_hdf5
from .pairs3d import Pairs3D, write_pairs3d
from .sample import make_sample
from .synthetic import SyntheticPairs, generate_pair, write_synthetic
from .synthetic3d import Synthetic3DPairs, generate_pair3d

__all__ = [
    "BadPairError",
    "OANetPairs",
    "PairCollator",
    "Pairs3D",
    "Synthetic3DPairs",
    "SyntheticPairs",
    "collate_pairs",
    "generate_pair",
    "generate_pair3d",
    "make_sample",
    "merge_oanet_hdf5",
    "write_oanet_hdf5",
    "write_pairs3d",
    "write_synthetic",
]
