"""Correspondence pruning network, its building blocks and its loss."""

from .blocks import (Attention, GeometricRotary, GraphLaplacian, PointCN, StateCrossAttention,
                     TransformerBlock, laplacian_aggregate, to_3d, to_4d)
from .corrnet import CorrNet, CorrNetConfig
from .loss import CorrNetLoss, balanced_bce, virtual_correspondences

__all__ = [
    "Attention", "CorrNet", "CorrNetConfig", "CorrNetLoss", "GeometricRotary", "GraphLaplacian", "PointCN",
    "StateCrossAttention", "TransformerBlock", "balanced_bce", "laplacian_aggregate", "to_3d",
    "to_4d", "virtual_correspondences",
]
