"""benchmarks/colmap_reconstruct.py: the similarity alignment and pose errors against known
transforms (closed form), and both reconstructions of five fountain_P11 images (skipped where
``../shared/real-dev`` is absent)."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from tests.conftest import load_benchmark, need_shared

FIVE = ["0000", "0001", "0002", "0003", "0004"]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("colmap_reconstruct")


def _rotation(rng: np.random.Generator) -> np.ndarray:
    return cv2.Rodrigues(rng.normal(size=3))[0]


def test_alignment_recovers_a_known_similarity(bench):
    rng = np.random.default_rng(0)
    src = rng.normal(size=(7, 3)) * 5
    s, R, t = 0.37, _rotation(rng), rng.normal(size=3) * 10
    scale, R_hat, t_hat = bench.align(src, s * src @ R.T + t)
    assert scale == pytest.approx(s, rel=1e-10)
    np.testing.assert_allclose(R_hat, R, atol=1e-10)
    np.testing.assert_allclose(t_hat, t, atol=1e-9)
    line = np.outer(np.arange(5.0), [1.0, 2.0, 3.0])
    for a, b in ((src[:2], src[:2]), (line, 2 * line)):
        with pytest.raises(ValueError, match="no similarity"):
            bench.align(a, b)


def test_pose_errors_after_alignment(bench):
    """Ground-truth poses seen in another similarity frame have no error; one camera turned by
    2 degrees about its axis has that error, and so has every relative rotation with it; one
    moved by 0.1 has most of that error (the others within the least-squares alignment's share
    of that move)."""
    rng = np.random.default_rng(1)
    n = 20
    R_gt = np.stack([_rotation(rng) for _ in range(n)])
    C_gt = rng.normal(size=(n, 3)) * 3
    s, Ra, t = 2.5, _rotation(rng), rng.normal(size=3)  # model frame -> GT frame
    C = (C_gt - t) @ Ra / s  # Raᵀ (C_gt - t) / s
    R = R_gt @ Ra  # camera rotations in the model frame: R_gt Ra
    centre, rotation = bench.pose_errors(R, C, R_gt, C_gt)
    assert centre.max() < 1e-9 and rotation.max() < 1e-5

    assert bench.relative_rotation_errors(R, R_gt).max() < 1e-5

    R[3] = cv2.Rodrigues(np.array([0.0, 0.0, np.radians(2.0)]))[0] @ R[3]
    centre, rotation = bench.pose_errors(R, C, R_gt, C_gt)
    assert rotation[3] == pytest.approx(2.0, abs=1e-6)
    assert np.delete(rotation, 3).max() < 1e-5 and centre.max() < 1e-9
    relative = bench.relative_rotation_errors(R, R_gt)
    i, j = np.triu_indices(n, 1)
    np.testing.assert_allclose(relative[(i == 3) | (j == 3)], 2.0, atol=1e-6)
    assert relative[(i != 3) & (j != 3)].max() < 1e-5

    C[5] += np.array([0.0, 0.1, 0.0]) / s  # 0.1 in GT units
    centre, _ = bench.pose_errors(R, C, R_gt, C_gt)
    assert 0.05 < centre[5] < 0.1 and np.delete(centre, 5).max() < 0.05


def test_fountain_reconstructs_from_corrnet(bench, tmp_path, capsys):
    """Five fountain_P11 images: both databases reconstruct, corrnet's registers every image
    and lands within 1 degree and 2 % of the scene scale of the ground truth (~40 s)."""
    source = need_shared("real-dev", "fountain_P11", "test")
    seq = tmp_path / "fountain5"
    (seq / "test" / "images").mkdir(parents=True)
    (seq / "test" / "calibration").mkdir()
    for name in FIVE:
        shutil.copy(source / "images" / f"{name}.jpg", seq / "test" / "images")
        shutil.copy(source / "calibration" / f"calibration_{name}.h5", seq / "test" / "calibration")
    (seq / "test" / "images.txt").write_text("".join(f"images/{n}.jpg\n" for n in FIVE))
    (seq / "test" / "calibration.txt").write_text(
        "".join(f"calibration/calibration_{n}.h5\n" for n in FIVE)
    )
    argv = ["--seq", str(seq), "--work", str(tmp_path / "work"), "--threads", "2", "--workers", "1"]
    assert bench.main(argv) == 0  # no pool: no fork after COLMAP's threads
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| fountain5")]
    assert [r[1].strip() for r in rows] == ["colmap", "corrnet"]
    corrnet = [cell.strip() for cell in rows[1]]
    assert corrnet[2] == "5/5" and int(corrnet[3]) > 500
    assert float(corrnet[6]) < 2.0  # median centre error, % of scale
    assert float(corrnet[7].split("/")[1]) < 1.0  # max rotation error, degrees
    assert float(corrnet[8].split("/")[1]) < 0.5  # max relative rotation error, degrees
    assert (tmp_path / "work" / "fountain5" / "corrnet.db").is_file()


def test_bad_sequence_is_one_line(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--seq", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "missing: expected a sequence folder with test/images.txt" in capsys.readouterr().err
