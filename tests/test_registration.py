"""3-D pairs (synthetic and RGB-D), their HDF5 layout, registration evaluation and eval.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from corrnet.commands import eval as eval_cli
from corrnet.datasets.pairs3d import (
    INLIER_THRESHOLD,
    Pairs3D,
    describe,
    is_pairs3d,
    match_fragments,
    write_pairs3d,
)
from corrnet.datasets.synthetic3d import generate_pair3d
from corrnet.eval.predict import kept_matches
from corrnet.eval.registration import METHODS, evaluate_registration
from corrnet.eval.report import REPORT_FILES, write_report
from corrnet.models import CorrNet, CorrNetConfig, make_predictor

from .conftest import need_shared

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = {
    "registration_recall",
    "rotation_error_deg",
    "translation_error_cm",
    "precision",
    "recall",
    "f1",
    "ms_per_pair",
}


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return [generate_pair3d(seed=7, index=i, num_matches=200) for i in range(3)]


@pytest.fixture(scope="module")
def pairs_file(pairs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs3d") / "syn.hdf5"
    assert write_pairs3d(path, pairs, progress=False) == 3
    return path


def test_labels_equal_a_float64_recomputation_and_matches_are_fpfh_nearest_neighbours(
    pairs, pairs_file
):
    import open3d as o3d

    data = Pairs3D(pairs_file, side_info=True)
    assert is_pairs3d(pairs_file) and len(data) == 3
    for i, pair in enumerate(pairs):
        s = data[i]
        xs, R, t = (s[k].double().numpy() for k in ("xs", "R", "t"))
        dist = np.sqrt(((np.einsum("ij,nj->ni", R, xs[:, :3]) + t - xs[:, 3:]) ** 2).sum(1))
        assert np.array_equal(s["labels"].numpy() > 0.5, dist < INLIER_THRESHOLD)
        assert 0 < s["labels"].mean() < 1 and s["features"].shape == (200, 8)
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-6)
        assert pair["overlap"] >= 0.3
    # the target of each match is the nearest FPFH neighbour of its source point (Open3D's KD-tree)
    rng = np.random.default_rng(0)
    room = np.concatenate(
        [rng.uniform(0, 2, (3000, 3)) * [1, 1, 0], rng.uniform(0, 1, (800, 3)) * [0.3, 1, 1]]
    )
    frag1, frag2 = (
        describe(room),
        describe(room @ rotation_z(0.2).T + rng.normal(scale=0.01, size=room.shape)),
    )
    m = match_fragments(frag1, frag2, np.eye(3), np.zeros(3), num_matches=60, seed=1)
    feature = o3d.pipelines.registration.Feature()
    feature.data = frag2.features.T.astype(np.float64)
    tree = o3d.geometry.KDTreeFlann(feature)
    for x1, x2 in zip(m["xs"][:, :3], m["xs"][:, 3:]):
        i = int(np.argmin(np.linalg.norm(frag1.points - x1, axis=1)))
        _, nn, _ = tree.search_knn_vector_xd(frag1.features[i].astype(np.float64), 1)
        assert np.allclose(frag2.points[nn[0]], x2, atol=1e-5)


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _tiny_predictor() -> object:
    torch.manual_seed(0)
    return make_predictor(
        CorrNet(
            CorrNetConfig(
                geometry="rigid",
                side_info=True,
                width=16,
                blocks_per_stage=2,
                heads=2,
                num_states=4,
            )
        )
    )


class Oracle:
    """Logits from the labels: what a perfect network would keep."""

    def __init__(self, data: Pairs3D) -> None:
        self.net, self.data, self.calls = _tiny_predictor(), data, 0

    def __call__(self, features: torch.Tensor) -> dict:
        out = dict(self.net(features))
        out["logits"] = (self.data[self.calls]["labels"] * 20 - 10)[None]
        self.calls += 1
        return out


def test_kept_matches_at_least_k_gives_the_positives_or_the_k_best():
    logits = torch.tensor([[0.5, -1.0, 2.0, -3.0, -1.0, -0.2]])
    chosen = lambda k: torch.nonzero(kept_matches(logits, at_least=k)[0]).flatten().tolist()
    assert chosen(4) == [0, 1, 2, 5]  # -1.0 tie: lower index
    assert chosen(1) == [0, 2]  # more kept than k
    assert chosen(10) == list(range(6))
    assert chosen(2) == [0, 2]


def test_registration_report_has_the_schema_and_an_oracle_registers(pairs_file, tmp_path):
    data = Pairs3D(pairs_file, side_info=True)
    # candidates=0: RANSAC sees the oracle's kept matches only (200 matches < the default 400)
    result = evaluate_registration(data, Oracle(data), progress=False, dataset="syn", candidates=0)
    summary = write_report(result, tmp_path / "rep")
    assert {p.name for p in (tmp_path / "rep").iterdir()} == set(REPORT_FILES)
    saved = json.loads((tmp_path / "rep/report.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert (
        saved["kind"] == "registration"
        and saved["pairs"] == 3
        and tuple(saved["methods"]) == METHODS
    )
    for method, row in saved["methods"].items():
        assert set(row) == SCHEMA, method
    oracle = saved["methods"]["corrnet+ransac"]
    assert oracle["registration_recall"] == 1.0 and oracle["precision"] > 0.9
    assert saved["methods"]["corrnet"]["precision"] == 1.0  # kept = the true inliers
    lines = (tmp_path / "rep/per_pair.csv").read_text().splitlines()
    assert (
        lines[0] == "pair,method,err_R,err_t,success,precision,recall,ms"
        and len(lines) == 1 + 3 * 4
    )
    with pytest.raises(FileExistsError, match="already holds a report"):
        write_report(result, tmp_path / "rep")


def test_eval_cli_recognises_a_3d_file_and_refuses_to_overwrite(pairs_file, tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        eval_cli.main(
            ["--data", str(pairs_file), "--methods", "ransac", "fgr", "--out", str(out), "--quiet"]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "registration" and set(report["methods"]) == {"ransac", "fgr"}
    assert (
        eval_cli.main(
            ["--data", str(pairs_file), "--methods", "ransac", "--out", str(out), "--quiet"]
        )
        == 2
    )
    assert (
        eval_cli.main(
            [
                "--data",
                str(pairs_file),
                "--methods",
                "corrnet-8pt",
                "--out",
                str(tmp_path / "x"),
                "--quiet",
            ]
        )
        == 2
    )
    from corrnet.checkpoint import PRETRAINED_REGISTRATION
    from corrnet.datasets import write_synthetic

    write_synthetic(tmp_path / "two-view.hdf5", 2, 0, "outdoor", 64)
    assert (
        eval_cli.main(
            [
                "--data",
                str(tmp_path / "two-view.hdf5"),
                "--checkpoint",
                str(PRETRAINED_REGISTRATION),
                "--methods",
                "corrnet-8pt",
                "--out",
                str(tmp_path / "y"),
                "--quiet",
            ]
        )
        == 2
    )
    err = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("corrnet eval: error: ")
    ]
    assert len(err) == 3 and "already holds a report" in err[0] and "are two-view methods" in err[1]
    assert str(PRETRAINED_REGISTRATION) in err[2] and "two-view pairs need a two-view one" in err[2]


def test_eval_cli_expands_variables_in_a_3d_path_as_in_a_two_view_one(
    pairs_file, tmp_path, monkeypatch
):
    monkeypatch.setenv("CORRNET_TEST_PAIRS", str(pairs_file.parent))
    out = tmp_path / "var"
    assert (
        eval_cli.main(
            [
                "--data",
                f"$CORRNET_TEST_PAIRS/{pairs_file.name}",
                "--methods",
                "fgr",
                "--max-pairs",
                "1",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "registration" and report["dataset"] == "syn" and report["pairs"] == 1


def _damaged(pairs_file: Path, tmp_path: Path, key: str, value: np.ndarray) -> Path:
    path = tmp_path / f"bad-{key}.hdf5"
    shutil.copy(pairs_file, path)
    with h5py.File(path, "r+") as f:
        del f[key]["1"]
        f[key].create_dataset("1", data=value.astype(np.float32))
    return path


@pytest.mark.parametrize(
    "key, make, message",
    [
        (
            "xs",
            lambda xs: np.where(np.arange(xs.size).reshape(xs.shape) == 5, np.nan, xs),
            "pair 1: xs: expected finite points, got NaN",
        ),
        ("xs", lambda xs: xs[:, :2], "pair 1: xs: expected at least 3 matches, got 2"),
        ("Rs", lambda R: R * 1.5, "pair 1: Rs: expected a rotation"),
        ("xs", lambda xs: xs + 1e30, r"pair 1: xs: expected \|coordinates\| <= 10000 m"),
        ("mutuals", lambda m: m * 0 + 0.5, "pair 1: mutuals: expected flags 0 or 1"),
        ("ratios", lambda r: r + 2, r"pair 1: ratios: expected ratios in \[0, 1\]"),
    ],
)
def test_bad_3d_pairs_get_one_line_errors(pairs_file, tmp_path, key, make, message):
    with h5py.File(pairs_file) as f:
        original = f[key]["1"][()]
    path = _damaged(pairs_file, tmp_path, key, make(original))
    with pytest.raises(ValueError, match=message) as err:
        Pairs3D(path)[1]
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "delete, message",
    [
        ("ts", r"missing key\(s\) \['ts'\]; expected groups \['xs', 'ys', 'Rs', 'ts'\]"),
        ("ts/2", "group 'ts' has 2 pairs, expected 3 like 'xs'"),
    ],
)
def test_a_3d_file_without_a_group_or_with_a_short_one_is_refused_when_opened(
    pairs_file, tmp_path, delete, message
):
    path = tmp_path / "groups.hdf5"
    shutil.copy(pairs_file, path)
    with h5py.File(path, "r+") as f:
        del f[delete]
    with pytest.raises(ValueError, match=message) as err:
        Pairs3D(path)
    assert str(path) in str(err.value)


def test_prepare3d_rgbd_frames_and_a_pose_that_is_not_rigid(tmp_path, capsys):
    from corrnet.commands.prepare3d import main

    shared = need_shared("real-dev-3d", "redkitchen_a")
    seq = tmp_path / "kitchen"
    for sub in ("depth", "pose"):
        (seq / sub).mkdir(parents=True)
    shutil.copy(shared / "camera-intrinsics.txt", seq)
    for frame in ("frame-000000", "frame-000010", "frame-000020"):
        shutil.copy(shared / "depth" / f"{frame}.depth.png", seq / "depth")
        shutil.copy(shared / "pose" / f"{frame}.pose.txt", seq / "pose")
    out = tmp_path / "k.hdf5"
    assert main(["--rgbd", str(seq), "--out", str(out), "--num-matches", "300", "--quiet"]) == 0
    data = Pairs3D(out)
    assert len(data) == 3  # neighbouring frames overlap by far more than 30 %
    labels = np.concatenate([data[i]["labels"].numpy() for i in range(3)])
    assert 0.1 < labels.mean() < 0.9
    assert data.name(0) == "kitchen/frame-000000/frame-000010"
    pose = seq / "pose" / "frame-000010.pose.txt"
    T = np.loadtxt(pose)
    T[:3, :3] *= 2.0
    np.savetxt(pose, T)
    assert main(["--rgbd", str(seq), "--out", str(tmp_path / "bad.hdf5"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("corrnet prepare3d: error: ") and str(pose) in err[0]
    assert "expected a rotation" in err[0] and not (tmp_path / "bad.hdf5").exists()


def test_train_py_trains_the_rigid_network_on_3d_pairs_and_refuses_a_two_view_file(
    pairs_file, tmp_path, capsys
):
    from corrnet.checkpoint import export_model, load_model
    from corrnet.commands.train import main

    run = tmp_path / "run"
    args = [
        "--config",
        str(ROOT / "configs/registration.yaml"),
        "--trainer.max_steps",
        "2",
        "--trainer.val_check_interval",
        "1",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(run),
        "--checkpoint.dirpath",
        str(run / "ckpt"),
        "--trainer.logger.init_args.save_dir",
        str(run),
        "--data.train",
        str(pairs_file),
        "--data.val",
        str(pairs_file),
        "--data.test",
        str(pairs_file),
        "--data.batch_size",
        "2",
        "--data.num_matches",
        "128",
    ]
    assert main(args) == 0
    model = load_model(export_model(run / "ckpt/last.ckpt", tmp_path / "w.pt"))
    assert model.config.geometry == "rigid" and model.config.in_channels == 8
    ckpt = torch.load(run / "ckpt/last.ckpt", map_location="cpu", weights_only=True)
    assert "val/RR" in str(ckpt["callbacks"])
    two_view = tmp_path / "two-view.hdf5"
    from corrnet.datasets import write_synthetic

    write_synthetic(two_view, 2, 0, "outdoor", 64)
    assert main(args[:-10] + ["--data.train", str(two_view)] + args[-8:]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err.startswith("corrnet train: error: ")
        and "a two-view pairs file" in err
        and str(two_view) in err
    )


def test_registration_picture_shows_both_clouds_and_coloured_matches(pairs, tmp_path):
    import cv2

    from corrnet.visualization import render_registration
    from corrnet.visualization.registration import SOURCE_RGB, TARGET_RGB
    from corrnet.visualization.scene import PALETTE

    p = pairs[0]
    labels = p["ys"] < INLIER_THRESHOLD
    kept = labels.copy()
    kept[np.flatnonzero(~labels)[:20]] = True  # 20 false positives
    kept[np.flatnonzero(labels)[:3]] = False  # 3 missed inliers
    out = render_registration(
        tmp_path / "reg.png",
        p["cloud1"],
        p["cloud2"],
        p["xs"],
        labels,
        kept,
        p["R"],
        p["t"],
        title="test",
        errors=(1.0, 0.02),
        size=(800, 400),
    )
    rgb = cv2.imread(str(out))[:, :, ::-1]
    assert rgb.shape == (400, 800, 3)
    views = rgb[56 : 400 - 32]  # between the header and the legend (layout at 800 x 400)
    for colour in (SOURCE_RGB, TARGET_RGB, PALETTE["tp"], PALETTE["fp"], PALETTE["fn"]):
        assert (np.abs(views.astype(int) - colour).max(-1) <= 6).sum() > 20, colour
