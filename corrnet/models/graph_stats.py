"""Is the graph layer alive?  Per stage: how many gates are open and how well they rank inliers.

The Laplacian of stage s is built from a = relu(tanh(w)) over that stage's matches
(``graph_logits``); a = 0 everywhere makes L the identity and the layer a plain residual
conv.  :func:`graph_liveness` measures, on labelled pairs, the share of matches with a > 0
and the ROC AUC of a against the ground-truth labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from .blocks import graph_weights


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative, ties counting one half (Mann–Whitney U with average ranks).

    scores (n,) float, labels (n,) bool -> AUC in [0, 1]; NaN when a class is empty.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"labels: expected shape {scores.shape} like scores, got {labels.shape}")
    pos = int(labels.sum())
    neg = labels.size - pos
    if pos == 0 or neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each tie group
    u = average_rank[inverse][labels].sum() - pos * (pos + 1) / 2.0
    return float(u / (pos * neg))


def graph_liveness(
    model: nn.Module, samples: Iterable[Mapping[str, torch.Tensor]]
) -> list[dict[str, float]]:
    """Per stage, over all matches the stage saw in ``samples`` (batch 1, eval mode):

    ``open``: share of matches with a > 0; ``auc``: ROC AUC of a against the labels, all
    pairs' matches pooled; ``auc_pair_mean``: mean of the per-pair AUCs (pairs with both
    classes); ``matches``: how many matches.  Samples need ``features`` (N, C) and
    ``labels`` (N,) (inlier when > 0.5).
    """
    model.eval()
    gates: list[list[np.ndarray]] = []
    truth: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for sample in samples:
            out = model(torch.as_tensor(sample["features"]).float()[None])
            labels = torch.as_tensor(sample["labels"]) > 0.5
            for s, (w, idx) in enumerate(zip(out["graph_logits"], out["stage_indices"])):
                if s == len(gates):
                    gates.append([]), truth.append([])
                gates[s].append(graph_weights(w[0].float()).numpy())
                truth[s].append(labels[idx[0]].numpy())
    stats = []
    for a, y in zip(gates, truth):
        per_pair = [roc_auc(ai, yi) for ai, yi in zip(a, y)]
        per_pair = [v for v in per_pair if not np.isnan(v)]
        pooled_a, pooled_y = np.concatenate(a), np.concatenate(y)
        stats.append(
            {
                "matches": int(pooled_a.size),
                "open": float((pooled_a > 0).mean()),
                "auc": roc_auc(pooled_a, pooled_y),
                "auc_pair_mean": float(np.mean(per_pair)) if per_pair else float("nan"),
            }
        )
    return stats
