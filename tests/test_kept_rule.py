"""benchmarks/kept_rule.py: its subsets, its agreement with eval.py's methods, its table and CLI."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from corrnet.datasets.oanet_hdf5 import INTRINSICS_KEYS
from corrnet.eval.estimators import make_estimators
from corrnet.eval.evaluate import evaluate
from tests.conftest import load_benchmark
from tests.test_eval import Oracle, pair, write_oanet


@pytest.fixture(scope="module")
def kept_rule():
    return load_benchmark("kept_rule")


def test_subsets_threshold_fallback_and_prosac_order(kept_rule):
    logits = np.array([0.3, -1.0, 2.5, 0.4, 1.5, 1.2, 3.0, -3.0, 0.7, -0.1, 0.25, 0.9, 0.6])
    ratios = np.array([0.5, 0.9, 0.7, 0.85, 0.79, 0.95, 0.2, 0.6, 0.81, 0.99, 0.3, 0.8, 0.9])
    rows = kept_rule.subsets(logits, ratios, [0.0, 0.28, 10.0])
    assert (
        list(rows["logit > 0"][0]) == [0, 2, 3, 4, 5, 6, 8, 10, 11, 12] and not rows["logit > 0"][1]
    )
    assert list(rows["logit > 0.28"][0]) == [0, 2, 3, 4, 5, 6, 8, 11, 12]
    assert sorted(rows["logit > 10"][0]) == [2, 3, 4, 5, 6, 8, 11, 12]  # the 8 best stand in
    order, progressive = rows[kept_rule.PROSAC]
    assert list(order) == [6, 2, 4, 5, 11, 8, 12, 3, 0, 10] and progressive
    assert list(rows[kept_rule.RATIO][0]) == [0, 2, 4, 6, 7, 10]


def test_rows_equal_eval_methods_at_the_same_seed(kept_rule):
    """``logit > 0`` is corrnet+poselib and ``ratio < 0.8`` is ratio+poselib, seed for seed;
    PROSAC recovers the exact poses."""
    samples = [pair(seed, n=300, inliers=90, noise=3e-4) for seed in range(70, 73)]
    logits = [
        np.where(s["labels"].numpy() > 0.5, 10.0, -10.0) + np.linspace(0, 1, 300) for s in samples
    ]
    errors = kept_rule.measure(samples, logits, [0.0], [1, 5], workers=1)
    for seed in (1, 5):
        ref = evaluate(
            samples,
            Oracle(samples, logits),
            ["corrnet+poselib", "ratio+poselib"],
            workers=1,
            progress=False,
            estimators=make_estimators(seed),
        )
        assert np.array_equal(errors["logit > 0", seed], ref.errors("corrnet+poselib"))
        assert np.array_equal(errors[kept_rule.RATIO, seed], ref.errors("ratio+poselib"))
        assert (errors[kept_rule.PROSAC, seed] < 1.0).all()


def test_table_means_over_seeds_and_spread(kept_rule):
    errors = {("a", 1): np.array([1.0, 12.0, 30.0, 2.0]), ("a", 2): np.array([1.0, 1.0, 30.0, 2.0])}
    text = kept_rule.table(errors, [("first", 0, 2), ("all", 0, 4)])
    # first two pairs: seed 1 mAP5 50, mAP10 (50 + 50) / 2, mAP20 (50 + 50 + 100 + 100) / 4;
    # seed 2: 100
    assert "75.0/75.0/87.5 [50.0-100.0]" in text
    # all four: seed 1 mAP5 50 (mAP20 62.5), seed 2 75
    assert "62.5/62.5/68.8 [50.0-75.0]" in text and "first (2)" in text and "all (4)" in text


def test_cli_on_a_toy_file_and_bad_groups(kept_rule, tmp_path, capsys):
    write_oanet(tmp_path / "toy.hdf5", [pair(seed, n=200, inliers=80) for seed in (80, 81)])
    kept_rule.main(
        [
            "--data",
            str(tmp_path / "toy.hdf5"),
            "--seeds",
            "3",
            "--thresholds",
            "0",
            "--workers",
            "1",
            "--groups",
            "one:0:1",
            "both:0:2",
        ]
    )
    out = capsys.readouterr().out
    assert "PoseLib seeds 3" in out and "one (1)" in out and "both (2)" in out
    assert out.count("\n") == 5  # header line, column line, three rows
    for groups in (["x:0:3"], ["x:1:1"], ["nocolons"]):
        with pytest.raises(SystemExit):
            kept_rule.main(["--data", str(tmp_path / "toy.hdf5"), "--groups", *groups])
        assert "--groups" in capsys.readouterr().err


def _pixel_sampson(sample: dict) -> np.ndarray:
    """Independent reference: OpenCV's Sampson error (pixels) of every match under
    F = K2⁻ᵀ [t]ₓ R K1⁻¹."""
    xs, R, t, K1, K2 = (np.asarray(sample[k], np.float64) for k in ("xs", "R", "t", "K1", "K2"))
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    F = np.linalg.inv(K2).T @ tx @ R @ np.linalg.inv(K1)
    u1, u2 = np.c_[xs[:, :2], np.ones(len(xs))] @ K1.T, np.c_[xs[:, 2:], np.ones(len(xs))] @ K2.T
    return np.sqrt([cv2.sampsonDistance(a[:, None], b[:, None], F) for a, b in zip(u1, u2)])


def test_oracle_rows_are_the_labelled_inliers_and_those_within_px(kept_rule):
    sample = pair(90, n=300, inliers=120, noise=2e-3)  # 600 px focal: inliers ~1 px off
    labels = sample["labels"].numpy() > 0.5
    rows = kept_rule.subsets(np.zeros(300), sample["ratios"].numpy(), [0.0], sample, [0.5, 1.0])
    assert list(rows[kept_rule.LABELS][0]) == list(np.flatnonzero(labels))
    d = _pixel_sampson(sample)
    for px in (0.5, 1.0):
        expected = np.flatnonzero(labels & (d < px))
        assert (
            list(rows[kept_rule.oracle_row(px)][0]) == list(expected)
            and not rows[kept_rule.oracle_row(px)][1]
        )
        assert 0 < len(expected) < labels.sum()
    assert kept_rule.LABELS not in kept_rule.subsets(np.zeros(300), sample["ratios"].numpy(), [0.0])


def test_oracle_on_exact_inliers_recovers_the_pose_and_cli_checks_px(kept_rule, tmp_path, capsys):
    samples = [pair(seed, n=200, inliers=60) for seed in (91, 92)]
    errors = kept_rule.measure(samples, [np.zeros(200)] * 2, [0.0], [1], workers=1, oracle=[1.0])
    assert (errors[kept_rule.LABELS, 1] < 0.1).all() and (
        errors[kept_rule.oracle_row(1.0), 1] < 0.1
    ).all()
    write_oanet(tmp_path / "toy.hdf5", samples)
    kept_rule.main(
        [
            "--data",
            str(tmp_path / "toy.hdf5"),
            "--seeds",
            "3",
            "--thresholds",
            "0",
            "--workers",
            "1",
            "--oracle",
        ]
    )
    out = capsys.readouterr().out
    assert (
        "labels < 1 px" in out and out.count("\n") == 7
    )  # header, columns, three rows, two oracle rows
    with pytest.raises(SystemExit):
        kept_rule.main(["--data", str(tmp_path / "toy.hdf5"), "--oracle", "0"])
    assert "--oracle" in capsys.readouterr().err
    write_oanet(tmp_path / "noK.hdf5", samples, drop=INTRINSICS_KEYS)  # PoseLib's pixels need K
    with pytest.raises(SystemExit):
        kept_rule.main(["--data", str(tmp_path / "noK.hdf5")])
    assert "noK.hdf5: missing key(s) ['cx1s'" in capsys.readouterr().err
