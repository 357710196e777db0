"""Values that command-line options need (choices, defaults, limits), free of heavy imports.

This module imports nothing but the standard library, so that ``corrnet COMMAND --help``
builds its options without torch, OpenCV, h5py, Open3D or Lightning.  Each value is defined
here once and imported by the modules it belongs to.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- two-view pairs
MIN_MATCHES = 8
"""Fewest matches a pair may have (the eight-point algorithm needs eight)."""
MAX_MATCHES = 1_000_000
"""Most matches a pair may declare (OANet's files have 2000-8000); a pair's datasets are read
only after their declared shapes are checked, so a small file declaring billions of matches is
refused before anything is allocated."""
NUM_FEATURES = 2000
"""Default keypoints per image (OANet's SIFT protocol, :mod:`corrnet.datasets.prepare`)."""
DETECTORS = ("sift", "orb", "akaze")
"""The OpenCV detectors of ``--detector`` (:func:`corrnet.datasets.prepare.detect_features`):
SIFT (float descriptors, L2, OANet's protocol and the default), ORB and AKAZE (binary
descriptors, Hamming distance)."""
DEFAULT_DETECTOR = DETECTORS[0]
"""The detector the shipped weights were trained with."""
MODES = ("outdoor", "indoor", "mixed")
"""Scene types of the synthetic pairs (:mod:`corrnet.datasets.synthetic`); ``mixed`` draws
outdoor or indoor per pair."""

# --------------------------------------------------------------------------- 3-D pairs
MIN_RIGID_MATCHES = 3
"""Fewest matches that fix a rigid transform (three non-collinear points)."""
MIN_OVERLAP = 0.3
"""3-D pairs with less overlap are left out (3DMatch's fragment pairs have > 30 % overlap;
Zeng et al., CVPR 2017)."""
NUM_MATCHES_3D = 1000
"""Matches per 3-D pair by default (source points matched)."""

# --------------------------------------------------------------------------- evaluation
SEED = 1234
"""Default RANSAC seed, set before every estimate (``cv2.setRNGSeed``; PoseLib's ``seed``)."""
POSELIB_THRESHOLD = 1.0
"""PoseLib's ``max_epipolar_error`` (Sampson error in pixels) by default."""
ESTIMATOR_NAMES = ("ransac", "magsac", "poselib")
"""The robust estimators, the keys of :func:`corrnet.eval.estimators.make_estimators`."""
SUBSETS = ("corrnet", "all", "ratio")
"""Matches a robust estimator sees: the network's kept ones, all, Lowe ratio < 0.8."""
POSE_METHODS = ("corrnet", "corrnet-8pt")
"""The network's poses without RANSAC."""
ROBUST = {
    (name if subset == "all" else f"{subset}+{name}"): (subset, name)
    for subset in SUBSETS
    for name in ESTIMATOR_NAMES
}
"""(subset, estimator name) of every robust method, named ``<subset>+<estimator>`` (the
estimator's name alone on all matches)."""
METHODS = (*POSE_METHODS, *ROBUST)
"""Every two-view evaluation method (:mod:`corrnet.eval.evaluate`)."""
NETWORK_METHODS = (*POSE_METHODS, *(m for m, (subset, _) in ROBUST.items() if subset == "corrnet"))
"""The two-view methods that need the network."""
BASELINES = tuple(m for m in METHODS if m not in NETWORK_METHODS)
"""The two-view methods without the network."""
REGISTRATION_METHODS = ("corrnet", "corrnet+ransac", "ransac", "fgr")
"""Every 3-D registration method (:mod:`corrnet.eval.registration`)."""
REGISTRATION_NETWORK_METHODS = ("corrnet", "corrnet+ransac")
"""The registration methods that need the network."""
REGISTRATION_BASELINES = ("ransac", "fgr")
"""The registration methods without the network."""

# --------------------------------------------------------------------------- pictures, benchmark
EMBEDDINGS = ("pca", "epipolar")
"""Supported embeddings of the (N, 4) matches into 3-D (:mod:`corrnet.visualization.scene`)."""
BENCH_DTYPES = ("bfloat16", "float16", "float32")
"""torch dtypes (by name) that ``corrnet bench --dtype`` times the network in."""
