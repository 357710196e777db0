"""benchmarks/adalam_baseline.py: the SIFT-to-LAF conversion, AdaLAM + PoseLib on rendered pairs
with known geometry, its reference rows against eval.py's, and its command line."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from corrnet.datasets import OANetPairs
from corrnet.datasets.prepare import Features, prepare, read_pairs_file, sift_features
from corrnet.eval.estimators import make_estimators
from corrnet.eval.evaluate import evaluate
from tests.conftest import load_benchmark
from tests.test_eval import pair, write_oanet
from tests.test_match import K, _render, _texture, wall_and_panel

KF = pytest.importorskip(
    "kornia.feature", reason="kornia is an optional extra (pip install -e '.[baselines]')"
)
SEED = 7


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("adalam_baseline")


def _features(kp: np.ndarray, sizes: np.ndarray, angles: np.ndarray) -> Features:
    return Features(kp, np.zeros((len(kp), 128), np.float32), sizes, angles)


def test_laf_scale_and_orientation_in_closed_form(bench):
    kp = np.array([[10.5, 20.0], [100.0, 5.25], [0.0, 0.0], [33.0, 44.0], [7.0, 8.0]])
    sizes = np.array([1.6, 3.2, 12.5, 40.0, 2.0])
    angles = np.array([0.0, 30.0, 90.0, 200.0, 359.5])  # OpenCV: degrees, clockwise on screen
    lafs = bench.sift_lafs(_features(kp, sizes, angles)).double()
    assert lafs.shape == (1, 5, 2, 3)
    scale = KF.get_laf_scale(lafs).reshape(-1).numpy()
    orientation = KF.get_laf_orientation(lafs).reshape(-1).numpy()
    assert np.allclose(scale, bench.SIFT_LAF_SCALE * sizes, rtol=1e-6)
    wrapped = (-angles + 180.0) % 360.0 - 180.0  # kornia reads back within [-180, 180]
    assert np.allclose(orientation, wrapped, atol=1e-4)
    assert np.allclose(KF.get_laf_center(lafs)[0].numpy(), kp, atol=1e-5)
    # closed form: the patch's x axis goes to 3 size (cos a, sin a) in pixels (y down)
    a = np.radians(angles)
    axis = bench.SIFT_LAF_SCALE * sizes[:, None] * np.stack([np.cos(a), np.sin(a)], 1)
    assert np.allclose(lafs[0, :, :, 0].numpy(), axis, atol=1e-4)


def test_laf_orientation_turns_with_the_image_as_opencv_measures_it(bench):
    """Rotate an image by 40° counter-clockwise on screen: the LAFs of the same SIFT keypoints
    turn by +40° (kornia's sense), and their x axes are the rotated ones; with OpenCV's angle
    taken as it is (no sign change) they would turn by -40°."""
    img = _texture(np.random.default_rng(3), 400)
    M = cv2.getRotationMatrix2D((199.5, 199.5), 40.0, 1.0)
    rotated = cv2.warpAffine(img, M, (400, 400), flags=cv2.INTER_LINEAR)
    f1, f2 = sift_features(img, 800), sift_features(rotated, 800)
    moved = f1.kp @ M[:, :2].T + M[:, 2]
    inside = np.linalg.norm(f1.kp - 199.5, axis=1) < 140  # away from the rotated borders
    d = np.linalg.norm(moved[:, None] - f2.kp[None], axis=2)
    j = d.argmin(1)
    same = inside & (d.min(1) < 0.5) & (np.abs(np.log(f2.sizes[j] / f1.sizes)) < 0.05)
    unique = same & (np.sum(d < 0.5, axis=1) == 1)  # one orientation at that place
    assert unique.sum() > 50
    o1 = KF.get_laf_orientation(bench.sift_lafs(f1)).reshape(-1).numpy()
    o2 = KF.get_laf_orientation(bench.sift_lafs(f2)).reshape(-1).numpy()
    turn = (o2[j] - o1 + 180.0) % 360.0 - 180.0
    assert np.median(np.abs(turn[unique] - 40.0)) < 2.0
    axes1 = bench.sift_lafs(f1)[0, :, :, 0].double().numpy() @ M[:, :2].T
    axes2 = bench.sift_lafs(f2)[0, :, :, 0].double().numpy()[j]
    cos = (axes1 * axes2).sum(1) / np.linalg.norm(axes1, axis=1) / np.linalg.norm(axes2, axis=1)
    assert np.median(np.degrees(np.arccos(np.clip(cos[unique], -1, 1)))) < 2.0


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    return cv2.Rodrigues(np.radians(degrees) * axis / np.linalg.norm(axis))[0]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    """Three pairs (sharing view 1) of a textured wall and a tilted panel, prepared into an
    OANet file with image paths, as data/prepare.py does."""
    rng = np.random.default_rng(0)
    planes = wall_and_panel(rng)
    motions = [
        (_rotation(np.array([0.0, 1.0, 0.0]), 6), np.array([-1.0, 0.1, 0.2])),
        (_rotation(np.array([0.1, -0.3, 1.0]), 15), np.array([0.8, -0.3, 0.1])),
        (_rotation(np.array([1.0, 0.2, 0.0]), 5), np.array([0.2, 0.9, -0.3])),
    ]
    tmp = tmp_path_factory.mktemp("adalam")
    cv2.imwrite(str(tmp / "view0.png"), _render(planes, np.eye(3), np.zeros(3)))
    entries = []
    for k, (R, t) in enumerate(motions, 1):
        cv2.imwrite(str(tmp / f"view{k}.png"), _render(planes, R, t))
        entries.append(
            {"name": f"p{k}", "image1": "view0.png", "image2": f"view{k}.png", "K1": K.tolist()}
            | {"K2": K.tolist(), "R": R.tolist(), "t": t.tolist()}
        )
    (tmp / "pairs.json").write_text(json.dumps(entries))
    out = tmp / "pairs.hdf5"
    prepare(read_pairs_file(tmp / "pairs.json"), out, workers=1)
    return {"path": out, "motions": motions}


def test_adalam_poselib_recovers_the_rendered_poses(bench, rendered, monkeypatch):
    calls = []
    extract = bench.sift_features
    monkeypatch.setattr(bench, "sift_features", lambda img, n: calls.append(n) or extract(img, n))
    data = OANetPairs(rendered["path"])
    m = bench.measure(data, 2000, seed=SEED, workers=1, progress=False)
    assert len(calls) == 4  # view 0 once for three pairs
    assert list(m.positions) == [0, 1, 2] and not m.skipped and m.dropped == 0
    assert m.off_position == 0 and m.max_position_px < bench.POSITION_TOLERANCE_PX  # pinhole
    assert (m.errors(bench.ADALAM) < 3.0).all(), m.errors(bench.ADALAM)
    assert (m.matches[bench.ADALAM] > 100).all() and (m.inlier_fraction[bench.ADALAM] > 0.9).all()
    assert (m.matches[bench.ALL] == [len(data[i]["xs"]) for i in range(3)]).all()
    assert (m.adalam_ms > 0).all() and (m.poselib_ms(bench.ADALAM) > 0).all()
    # the reference rows are eval.py's methods on the same file, seed for seed
    ref = evaluate(
        data,
        methods=[bench.RATIO, bench.ALL],
        workers=1,
        progress=False,
        estimators=make_estimators(SEED),
    )
    for row in (bench.RATIO, bench.ALL):
        assert np.array_equal(m.errors(row), ref.errors(row))


def test_cli_table_csv_and_feature_mismatch(bench, rendered, tmp_path, capsys):
    out = tmp_path / "per_pair.csv"
    argv = ["--data", str(rendered["path"]), "--workers", "1", "--seed", str(SEED)]
    assert bench.main([*argv, "--groups", "first:0:1", "all:0:3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 of 3 pairs have the file's features, 0 left out" in text
    rows = [line.split() for line in text.splitlines() if line.startswith(("first", "all"))]
    assert [r[2] for r in rows] == [bench.ADALAM, bench.RATIO, bench.ALL] * 2
    assert all(float(r[3]) == 100.0 for r in rows if r[2] == bench.ADALAM)  # mAP5
    table = list(csv.DictReader(out.open()))
    assert len(table) == 9 and {r["method"] for r in table} == set(bench.ROWS)
    assert all(float(r["err"]) < 3.0 for r in table if r["method"] == bench.ADALAM)
    # fewer keypoints than the file was prepared with: no pair has the file's features
    with pytest.raises(SystemExit) as exit_:
        bench.main([*argv, "--num-features", "1500"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "no pair whose recomputed features agree" in err
    assert "1500 image-1 keypoints" in err


def test_cli_refuses_a_file_without_image_paths(bench, tmp_path, capsys):
    write_oanet(tmp_path / "toy.hdf5", [pair(seed, n=100, inliers=40) for seed in (1, 2)])
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--data", str(tmp_path / "toy.hdf5")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "toy.hdf5: missing key(s) ['image1s', 'image2s']" in err
