"""3-D registration of point-cloud pairs from putative matches: corrnet and Open3D baselines.

Methods (:data:`METHODS`, named in :mod:`corrnet.constants`):

* ``corrnet``: the network alone, its weighted Kabsch transform (CorrNet's ``R``, ``t``);
* ``corrnet+ransac``: Open3D's ``registration_ransac_based_on_correspondence`` on the network's
  best matches: those it keeps (logit > 0), and at least its :data:`RANSAC_CANDIDATES` best
  (:func:`corrnet.eval.predict.kept_matches` with ``at_least``);
* ``ransac``: the same RANSAC on all matches;
* ``fgr``: Open3D's fast global registration (Zhou, Park and Koltun, ECCV 2016),
  ``registration_fgr_based_on_correspondence``, on all matches.

RANSAC: 3-point samples, inlier distance :data:`RANSAC_DISTANCE`, Open3D's edge-length (0.9)
and distance checkers, at most :data:`RANSAC_MAX_ITERATION` iterations with confidence
:data:`RANSAC_CONFIDENCE` (it stops earlier when the inlier ratio allows, so its time falls
with the inlier ratio of the matches it sees); Open3D's random generator is seeded with
:data:`RANSAC_SEED` before every estimate, which does not make its result exactly repeatable
(docs/registration.md).
FGR: maximum correspondence distance :data:`RANSAC_DISTANCE`, otherwise Open3D's defaults.

A pair is registered when the rotation error is below 15° and the translation error below
30 cm (:func:`corrnet.geometry.rigid.registration_errors`); the report gives per method the
registration recall, the mean rotation (°) and translation (cm) errors over the registered
pairs, inlier precision / recall / F1 and ms per pair.  The matches a method calls inliers:
the kept ones for ``corrnet``; for the others, the matches of its input whose residual under
its estimate is below :data:`RANSAC_DISTANCE`.  Times: the network (batch 1, one torch
thread) plus the estimator for ``corrnet+ransac``, the estimator alone for the baselines,
all in this process, one after the other.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from corrnet.constants import REGISTRATION_BASELINES as BASELINES
from corrnet.constants import REGISTRATION_METHODS as METHODS
from corrnet.constants import REGISTRATION_NETWORK_METHODS as NETWORK_METHODS
from corrnet.errors import UserError

from ..datasets.pairs3d import INLIER_THRESHOLD, residuals
from ..geometry.rigid import registration_errors
from .evaluate import (
    NETWORK_THREADS,
    MethodResults,
    Predictor,
    check_methods,
    inlier_scores,
    run_network,
    torch_threads,
)
from .predict import FALLBACK_TOP_K, kept_matches

RANSAC_DISTANCE = INLIER_THRESHOLD
RANSAC_MAX_ITERATION = 100_000
RANSAC_CONFIDENCE = 0.999
EDGE_LENGTH_SIMILARITY = 0.9
RANSAC_SEED = 0
RANSAC_CANDIDATES = 400
"""``corrnet+ransac`` hands RANSAC at least this many matches, the network's best: on hard
pairs (a few % inliers) the network keeps few matches with almost no inlier among them, and
RANSAC on those alone converges to a wrong consensus.  Chosen on synthetic pairs
(docs/registration.md)."""


@dataclass
class RegResult:
    """One method on one pair: errors (degrees, metres), success, inlier scores, time (ms),
    the estimate R (3, 3), t (3,) and the matches it calls inliers, (N,) bool."""

    position: int
    index: int
    method: str
    err_R: float
    err_t: float
    success: bool
    precision: float
    recall: float
    ms: float
    R: np.ndarray
    t: np.ndarray
    selected: np.ndarray


@dataclass
class RegEvalResult(MethodResults):
    """Registration results: :class:`RegResult` per pair and method."""

    results: list[RegResult]


def _clouds(xs: np.ndarray, subset: np.ndarray):
    """Open3D source and target clouds of the matches ``subset`` (K,) of xs (N, 6), and the
    identity correspondences between them."""
    import open3d as o3d

    vec = o3d.utility.Vector3dVector
    chosen = xs[subset]
    corres = o3d.utility.Vector2iVector(
        np.repeat(np.arange(len(chosen), dtype=np.int32)[:, None], 2, 1)
    )
    return (
        o3d.geometry.PointCloud(vec(chosen[:, :3])),
        o3d.geometry.PointCloud(vec(chosen[:, 3:])),
        corres,
    )


def open3d_ransac(xs: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """Open3D's correspondence RANSAC (module docstring) on matches ``subset`` -> T (4, 4)."""
    import open3d as o3d

    reg = o3d.pipelines.registration
    source, target, corres = _clouds(xs, subset)
    o3d.utility.random.seed(RANSAC_SEED)
    result = reg.registration_ransac_based_on_correspondence(
        source,
        target,
        corres,
        RANSAC_DISTANCE,
        reg.TransformationEstimationPointToPoint(False),
        3,
        [
            reg.CorrespondenceCheckerBasedOnEdgeLength(EDGE_LENGTH_SIMILARITY),
            reg.CorrespondenceCheckerBasedOnDistance(RANSAC_DISTANCE),
        ],
        reg.RANSACConvergenceCriteria(RANSAC_MAX_ITERATION, RANSAC_CONFIDENCE),
    )
    return np.asarray(result.transformation)


def open3d_fgr(xs: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """Open3D's fast global registration on matches ``subset`` -> T (4, 4)."""
    import open3d as o3d

    reg = o3d.pipelines.registration
    source, target, corres = _clouds(xs, subset)
    option = reg.FastGlobalRegistrationOption(maximum_correspondence_distance=RANSAC_DISTANCE)
    return np.asarray(
        reg.registration_fgr_based_on_correspondence(source, target, corres, option).transformation
    )


ESTIMATORS = {"ransac": open3d_ransac, "fgr": open3d_fgr}


def _result(
    position: int,
    sample: Mapping,
    method: str,
    R: np.ndarray,
    t: np.ndarray,
    selected: np.ndarray,
    ms: float,
) -> RegResult:
    err_R, err_t, ok = registration_errors(
        torch.from_numpy(np.array(R)),
        torch.from_numpy(np.array(t)),
        torch.as_tensor(sample["R"]),
        torch.as_tensor(sample["t"]),
    )
    precision, recall = inlier_scores(selected, np.asarray(sample["labels"]) > 0.5)
    return RegResult(
        position,
        int(sample["index"]),
        method,
        float(err_R),
        float(err_t),
        bool(ok),
        precision,
        recall,
        ms,
        R,
        t,
        selected,
    )


def evaluate_registration(
    samples: Sequence[Mapping],
    predictor: Predictor | None = None,
    methods: Sequence[str] | None = None,
    progress: bool = True,
    dataset: str = "",
    candidates: int = RANSAC_CANDIDATES,
) -> RegEvalResult:
    """Evaluate ``methods`` (default: all, or the baselines without predictor) on 3-D samples.

    samples: a Dataset of 3-D sample dictionaries (:class:`corrnet.datasets.pairs3d.Pairs3D`);
    predictor: features (1, N, C) -> a rigid CorrNet's output (``logits``, ``R``, ``t``);
    candidates: ``corrnet+ransac``'s RANSAC sees the kept matches and at least this many, the
    network's best (never fewer than the kept set's own fallback, FALLBACK_TOP_K).
    """
    methods, needs_net = check_methods(methods, predictor, METHODS, NETWORK_METHODS, BASELINES)
    if len(samples) == 0:
        raise UserError("samples: no pairs to evaluate")
    results: list[RegResult] = []
    kept, candidate, network_ms = None, None, 0.0
    at_least = max(candidates, FALLBACK_TOP_K)
    with torch_threads(NETWORK_THREADS):
        for position in tqdm(
            range(len(samples)), desc="registration", disable=not progress, unit="pair"
        ):
            sample = samples[position]
            xs = np.asarray(sample["xs"], np.float64)
            everything = np.arange(len(xs))
            if needs_net:
                net, network_ms = run_network(sample, predictor, ("logits", "R", "t"))
                if "R" not in net:
                    raise ValueError(
                        "predictor: expected a rigid network (outputs 'R', 't'); this one "
                        "is two-view (model.net.geometry two_view)"
                    )
                kept = kept_matches(net["logits"][None])[0].numpy()
                candidate = kept_matches(net["logits"][None], at_least=at_least)[0].numpy()
                if "corrnet" in methods:
                    results.append(
                        _result(
                            position,
                            sample,
                            "corrnet",
                            net["R"].numpy(),
                            net["t"].numpy(),
                            kept,
                            network_ms,
                        )
                    )
            for method in methods:
                if method == "corrnet":
                    continue
                subset = np.flatnonzero(candidate) if method == "corrnet+ransac" else everything
                estimator = ESTIMATORS["fgr" if method == "fgr" else "ransac"]
                start = time.perf_counter()
                T = estimator(xs, subset)
                ms = (time.perf_counter() - start) * 1e3 + (
                    network_ms if method in NETWORK_METHODS else 0.0
                )
                selected = np.zeros(len(xs), bool)
                selected[subset] = residuals(xs[subset], T[:3, :3], T[:3, 3]) < RANSAC_DISTANCE
                results.append(_result(position, sample, method, T[:3, :3], T[:3, 3], selected, ms))
    return RegEvalResult(dataset, methods, len(samples), results)


COLUMNS = (
    "registration_recall",
    "rotation_error_deg",
    "translation_error_cm",
    "precision",
    "recall",
    "f1",
    "ms_per_pair",
)


def summarize_registration(result: RegEvalResult) -> dict:
    """``report.json`` of a registration evaluation::

        {"dataset": str, "pairs": int, "kind": "registration",
         "methods": {name: {"registration_recall", "rotation_error_deg", "translation_error_cm",
                            "precision", "recall", "f1", "ms_per_pair"}}}

    Recall, precision, recall and F1 are fractions in [0, 1] (precision and recall are means
    over pairs, F1 of those means); the errors are means over the registered pairs (None when
    none is); ms_per_pair is the mean time.
    """
    methods = {}
    for method in result.methods:
        rows = result.of(method)
        good = [r for r in rows if r.success]
        precision = float(np.mean([r.precision for r in rows]))
        recall = float(np.mean([r.recall for r in rows]))
        methods[method] = {
            "registration_recall": len(good) / len(rows),
            "rotation_error_deg": float(np.mean([r.err_R for r in good])) if good else None,
            "translation_error_cm": float(100 * np.mean([r.err_t for r in good])) if good else None,
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
            "ms_per_pair": float(np.mean([r.ms for r in rows])),
        }
    return {
        "dataset": result.dataset,
        "pairs": result.pairs,
        "kind": "registration",
        "methods": methods,
    }
