"""Correspondence pruning network, its building blocks, its loss and fast inference."""

from .blocks import (
    Attention,
    GeometricRotary,
    GraphLaplacian,
    PointCN,
    StateCrossAttention,
    TransformerBlock,
    laplacian_aggregate,
    to_3d,
    to_4d,
)
from .corrnet import CorrNet, CorrNetConfig
from .graph_stats import graph_liveness, roc_auc
from .inference import InferenceModel, make_predictor
from .loss import CorrNetLoss, balanced_bce, virtual_correspondences

__all__ = [
    "Attention",
    "CorrNet",
    "CorrNetConfig",
    "CorrNetLoss",
    "GeometricRotary",
    "GraphLaplacian",
    "InferenceModel",
    "PointCN",
    "StateCrossAttention",
    "TransformerBlock",
    "balanced_bce",
    "graph_liveness",
    "laplacian_aggregate",
    "make_predictor",
    "roc_auc",
    "to_3d",
    "to_4d",
    "virtual_correspondences",
]
