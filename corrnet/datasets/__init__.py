"""Datasets of putative matches: OANet HDF5 files, synthetic pairs, preparation from images."""

from .collate import PairCollator, collate_pairs
from .oanet_hdf5 import BadPairError, OANetPairs, merge_oanet_hdf5, write_oanet_hdf5
from .sample import make_sample
from .synthetic import SyntheticPairs, generate_pair, write_synthetic

__all__ = ["BadPairError", "OANetPairs", "PairCollator", "SyntheticPairs", "collate_pairs",
           "generate_pair", "make_sample", "merge_oanet_hdf5", "write_oanet_hdf5", "write_synthetic"]
