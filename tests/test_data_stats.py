"""benchmarks/data_stats.py: the statistics against hand-computed cases, and the CLI's columns."""

from __future__ import annotations

import numpy as np
import pytest

from corrnet.datasets.oanet_hdf5 import SIDE_INFO_KEYS
from corrnet.datasets.synthetic import write_synthetic
from tests.conftest import load_benchmark
from tests.test_eval import pair, write_oanet


@pytest.fixture(scope="module")
def stats():
    return load_benchmark("data_stats")


def test_auc_counts_ties_half(stats):
    # pairs (pos, neg): 1>0, 1<2, 2>0, 2=2, 3>0, 3>2 -> (1 + 0 + 1 + 0.5 + 1 + 1) / 6
    assert stats.auc(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0])) == pytest.approx(4.5 / 6)
    assert np.isnan(stats.auc(np.array([1.0]), np.array([])))


def test_pair_stats_duplicates_many_to_one_and_coherence(stats):
    # inliers 0..3: 0 and 1 identical, 2 shares 0's image-2 point from elsewhere; 3 moves like 2
    xs = np.array(
        [
            [0.00, 0.00, 0.10, 0.10],
            [0.00, 0.00, 0.10, 0.10],
            [0.30, 0.30, 0.10, 0.10],
            [0.31, 0.30, 0.115, 0.10],
            [0.9, 0.9, -0.5, 0.4],
            [-0.8, 0.7, 0.6, -0.6],
            [0.5, -0.9, 0.2, 0.9],
        ]
    )
    labels = np.array([True, True, True, True, False, False, False])
    out = stats.pair_stats(xs, labels)
    assert out["dup_in"] == pytest.approx(0.5) and out["dup_out"] == 0
    # distinct inliers 0, 2, 3: 0 and 2 share an image-2 point
    assert out["many_in"] == pytest.approx(2 / 3) and out["many_out"] == 0
    # distinct inliers: 2 and 3 are 0.01 apart and move within 0.005 of each other; 0 is far
    assert out["coh_in"] == pytest.approx(2 / 3)


def test_cli_prints_a_column_per_source(stats, tmp_path, capsys):
    path = tmp_path / "syn.hdf5"
    write_synthetic(path, 4, seed=1, mode="indoor", num_matches=200)
    stats.main(["--hdf5", str(path), "--synthetic", "2", "--modes", "outdoor"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["statistic", "syn", "syn-outdoor"]
    assert any(
        line.startswith("ratio AUC (in vs out)") and len(line.split()) == 7 for line in lines
    )
    with pytest.raises(SystemExit):
        stats.main(["--hdf5", str(tmp_path / "missing.hdf5")])


def test_cli_refuses_a_file_without_ratios(stats, tmp_path, capsys):
    """Zeros in place of the ratios would be measured as if they were real."""
    write_oanet(tmp_path / "bare.hdf5", [pair(61, n=100, inliers=50)], drop=SIDE_INFO_KEYS)
    with pytest.raises(SystemExit):
        stats.main(["--hdf5", str(tmp_path / "bare.hdf5")])
    assert "bare.hdf5: missing key(s) ['ratios', 'mutuals']" in capsys.readouterr().err


def test_sift_deviations_by_hand_and_nan_without_the_keys(stats, tmp_path, capsys):
    """Deviations from the pair's median over its ratio < 0.8 matches; wrapped turns."""
    import torch

    n = 10
    sizes = np.c_[np.full(n, 2.0), np.full(n, 4.0)]  # zoom 2: log 2 for all but the last
    sizes[-1, 1] = 2.0
    angles = np.c_[np.full(n, 350.0), np.full(n, 20.0)]  # turn +30 across 0 / 360
    angles[-1] = [10.0, 190.0]  # turn 180: 150 off
    ratios = np.full(n, 0.5)
    ratios[-1] = 0.95
    dists = np.c_[ratios * 300, np.full(n, 300.0)]
    s = {k: torch.as_tensor(v) for k, v in dict(sizes=sizes, angles=angles, dists=dists).items()}
    s["ratios"] = torch.as_tensor(ratios)
    dev = stats.sift_deviations(s)
    np.testing.assert_allclose(dev["scale"], [0] * 9 + [np.log(2)], atol=1e-12)
    np.testing.assert_allclose(dev["turn"], [0] * 9 + [150], atol=1e-9)
    np.testing.assert_allclose(dev["d1"], dists[:, 0])
    assert stats.sift_deviations({"ratios": s["ratios"]}) is None
    path = tmp_path / "syn.hdf5"
    write_synthetic(path, 3, seed=1, mode="indoor", num_matches=200)
    stats.main(["--hdf5", str(path), "--synthetic", "0"])
    rows = {line[:32].strip(): line[32:].split() for line in capsys.readouterr().out.splitlines()}
    assert 0.5 < float(rows["|turn| off (deg) AUC"][0]) <= 1.0
    write_oanet(tmp_path / "old.hdf5", [pair(61, n=100, inliers=50)])
    stats.main(["--hdf5", str(tmp_path / "old.hdf5"), "--synthetic", "0"])
    rows = {line[:32].strip(): line[32:].split() for line in capsys.readouterr().out.splitlines()}
    assert rows["nearest dist AUC"] == ["nan"]
