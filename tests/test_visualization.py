"""Tests of corrnet.visualization: scene geometry, headless Open3D rendering, CLI, failure path."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from corrnet.commands.viz import main as cli_main
from corrnet.visualization import render_pair
from corrnet.visualization.render import layout
from corrnet.visualization.scene import (
    OUTCOMES,
    PALETTE,
    build_scene,
    check_inputs,
    embed,
    fit_essential,
    outcomes,
    pair_stats,
    sampson_residual,
)

SIZE = (960, 440)


def synthetic_pair(
    n: int = 600, inlier_ratio: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised matches (n, 4) of a random rigid motion and the (n,) ground-truth inlier mask."""
    rng = np.random.default_rng(seed)
    R = cv2.Rodrigues(rng.normal(size=3) * 0.1)[0]
    t = np.array([1.0, 0.1, 0.2])
    X = np.column_stack([rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), rng.uniform(4, 8, n)])
    X2 = X @ R.T + t
    x1, x2 = X[:, :2] / X[:, 2:], X2[:, :2] / X2[:, 2:]
    inlier = rng.random(n) < inlier_ratio
    x2[~inlier] = rng.uniform(-0.6, 0.6, (int((~inlier).sum()), 2))
    return np.column_stack([x1, x2]), inlier


def predicted(inlier: np.ndarray, seed: int = 1) -> np.ndarray:
    """A kept set with ~85% recall and ~10% of the outliers kept."""
    rng = np.random.default_rng(seed)
    u = rng.random(len(inlier))
    return np.where(inlier, u < 0.85, u < 0.1)


def colour_pixels(rgb: np.ndarray, name: str, tol: int = 6) -> int:
    """Number of pixels of rgb (H, W, 3) within tol of the palette colour of an outcome."""
    diff = np.abs(rgb.astype(np.int32) - np.asarray(PALETTE[name])).max(axis=-1)
    return int((diff <= tol).sum())


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"{path} is not a readable image"
    return bgr[:, :, ::-1]


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, inlier = synthetic_pair()
    return xs, inlier, predicted(inlier)


@pytest.fixture(scope="module")
def rendered(pair, tmp_path_factory) -> Path:
    xs, inlier, kept = pair
    out = tmp_path_factory.mktemp("render") / "sub" / "pair.png"
    return render_pair(out, xs, inlier, kept, title="synthetic", pose_error_deg=1.5, size=SIZE)


def test_outcomes_and_stats() -> None:
    gt = np.array([True, True, False, False, True])
    kept = np.array([True, False, True, False, True])
    assert [OUTCOMES[k] for k in outcomes(gt, kept)] == ["tp", "fn", "fp", "tn", "tp"]
    stats = pair_stats(gt, kept)
    assert (stats.tp, stats.fp, stats.fn, stats.tn, stats.kept) == (2, 1, 1, 1, 3)
    assert stats.precision == pytest.approx(2 / 3) and stats.recall == pytest.approx(2 / 3)
    assert np.isnan(pair_stats(gt, np.zeros(5, bool)).precision)


def test_embeddings_separate_inliers(pair) -> None:
    xs, inlier, _ = pair
    E = fit_essential(xs[inlier])
    residual = np.abs(sampson_residual(xs, E))
    assert residual[inlier].max() < 1e-8 < np.median(residual[~inlier])
    epipolar = embed(xs, inlier, "epipolar")
    assert epipolar.shape == (len(xs), 3)
    assert np.abs(epipolar[inlier, 1]).max() < 1e-6 < np.median(np.abs(epipolar[~inlier, 1]))
    pca = embed(xs, inlier, "pca")
    assert pca.shape == (len(xs), 3) and np.all(np.isfinite(pca))
    assert np.mean(np.linalg.norm(pca, axis=1) <= 1.0) == pytest.approx(0.98, abs=0.01)
    assert embed(xs[:2], inlier[:2], "pca").shape == (2, 3)
    assert embed(xs[:0], inlier[:0], "pca").shape == (0, 3)
    with pytest.raises(ValueError, match="embedding"):
        embed(xs, inlier, "tsne")
    with pytest.raises(ValueError, match=">= 8 ground-truth inliers"):
        embed(xs, np.arange(len(xs)) < 5, "epipolar")


def test_scene_places_keypoints_on_image_pixels(tmp_path: Path) -> None:
    paths = []
    for i, (w, h) in enumerate([(320, 240), (200, 400)]):
        paths.append(tmp_path / f"im{i}.jpg")
        cv2.imwrite(str(paths[-1]), np.full((h, w, 3), 128, np.uint8))
    K1 = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
    K2 = np.array([[250.0, 0, 100], [0, 250, 200], [0, 0, 1]])
    pix1, pix2 = np.array([[10.0, 20.0], [300.0, 200.0]]), np.array([[50.0, 390.0], [199.0, 0.0]])
    xs = np.column_stack([(pix1 - [160, 120]) / 300, (pix2 - [100, 200]) / 250])
    scene = build_scene(
        xs,
        np.array([True, False]),
        np.array([True, True]),
        image1=paths[0],
        image2=paths[1],
        K1=K1,
        K2=K2,
    )
    # Each image has height 1; image 2 starts after image 1 (width 320/240) plus the gap.
    x0 = scene.panels[1][0, 0]
    assert x0 > 320 / 240
    np.testing.assert_allclose(
        scene.lines["tp"][0, :, :2], [[10 / 240, 1 - 20 / 240], [x0 + 50 / 400, 1 - 390 / 400]]
    )
    np.testing.assert_allclose(
        scene.lines["fp"][0, :, :2], [[300 / 240, 1 - 200 / 240], [x0 + 199 / 400, 1.0]]
    )
    assert [t.shape for t in scene.textures] == [(240, 320, 3), (400, 200, 3)]
    assert len(scene.lines["tn"]) == 0 and len(scene.keypoints) == 0
    with pytest.raises(ValueError, match="K1/K2"):
        build_scene(
            xs, np.array([True, False]), np.array([True, True]), image1=paths[0], image2=paths[1]
        )


def test_render_size_and_outcome_colours(rendered: Path, pair) -> None:
    rgb = read_rgb(rendered)
    assert rgb.shape == (SIZE[1], SIZE[0], 3)
    assert sorted(p.name for p in rendered.parent.iterdir()) == ["pair.png"]  # no temp file left
    lay = layout(SIZE)
    matches, cloud = lay.pair.crop(rgb), lay.embed.crop(rgb)
    stats = pair_stats(pair[1], pair[2])
    assert stats.tp > 50 and stats.fp > 20 and stats.fn > 10
    for name in ("tp", "fp", "fn"):
        assert colour_pixels(matches, name) > 300, name
        assert colour_pixels(cloud, name) > 50, name
    assert colour_pixels(cloud, "tn") > 200


def test_render_changes_with_predictions(rendered: Path, pair, tmp_path: Path) -> None:
    xs, inlier, _ = pair
    before = layout(SIZE).pair.crop(read_rgb(rendered))
    truth = read_rgb(
        render_pair(
            tmp_path / "truth.png", xs, inlier, inlier.copy(), size=SIZE, show_true_negatives=True
        )
    )
    after = layout(SIZE).pair.crop(truth)
    assert colour_pixels(after, "tn") > 5 * colour_pixels(before, "tn")  # hidden unless asked for
    assert colour_pixels(after, "fp") < 20 < colour_pixels(before, "fp")
    assert colour_pixels(after, "fn") < 20 < colour_pixels(before, "fn")
    assert colour_pixels(after, "tp") > colour_pixels(before, "tp")


def test_render_textured_planes(tmp_path: Path) -> None:
    xs, inlier = synthetic_pair(n=300, seed=3)
    magenta = (200, 30, 170)
    images = []
    for i, (w, h) in enumerate([(160, 120), (120, 120)]):
        image = np.zeros((h, w, 3), np.uint8)
        image[: h // 2] = magenta[::-1]  # BGR
        images.append(tmp_path / f"img{i}.jpg")
        cv2.imwrite(str(images[-1]), image)
    K1 = np.array([[60.0, 0, 80], [0, 60, 60], [0, 0, 1]])
    K2 = np.array([[60.0, 0, 60], [0, 60, 60], [0, 0, 1]])
    out = render_pair(
        tmp_path / "textured.png",
        xs,
        inlier,
        predicted(inlier),
        image1=images[0],
        image2=images[1],
        K1=K1,
        K2=K2,
        size=(800, 400),
    )
    rgb = read_rgb(out)
    assert rgb.shape == (400, 800, 3)
    view = layout((800, 400)).pair.crop(rgb)
    near_magenta = np.abs(view.astype(np.int32) - magenta).max(axis=-1) <= 12
    rows = np.nonzero(near_magenta.any(axis=1))[0]
    assert near_magenta.sum() > 2000
    dark_rows = np.nonzero((view.max(axis=-1) < 20).any(axis=1))[0]
    assert rows.mean() < dark_rows.mean()  # texture upright: magenta top half above black half
    assert colour_pixels(view, "tp") > 100 and colour_pixels(view, "fp") > 50


def test_show_geometries_place_embedding_beside_pair(pair) -> None:
    from corrnet.visualization._worker import show_geometries  # imports Open3D; creates no renderer

    xs, inlier, kept = pair
    scene = build_scene(xs, inlier, kept)
    items = {item["name"]: item["geometry"] for item in show_geometries(scene)}
    assert {
        "frame0",
        "frame1",
        "keypoints",
        "lines_tp",
        "lines_fp",
        "lines_fn",
        "axes",
        "points_tn",
    } <= set(items)
    assert "lines_tn" not in items
    assert len(items["lines_fp"].lines) == pair_stats(inlier, kept).fp
    embedded = np.concatenate([np.asarray(items[f"points_{name}"].points) for name in OUTCOMES])
    assert len(embedded) == len(xs)
    assert embedded[:, 0].min() > scene.pair_bounds[1]


def test_missing_vulkan_raises_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    xs, inlier = synthetic_pair(n=50)
    monkeypatch.setenv("VK_ICD_FILENAMES", "/nonexistent/icd.json")
    monkeypatch.setenv("VK_DRIVER_FILES", "/nonexistent/icd.json")
    with pytest.raises(RuntimeError, match="apt-get install libvulkan1 mesa-vulkan-drivers") as err:
        render_pair(tmp_path / "never.png", xs, inlier, inlier)
    assert "worker killed by SIGABRT" in str(err.value) and "Vulkan" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def write_oanet_file(path: Path, xs: np.ndarray, inlier: np.ndarray) -> None:
    """One-pair HDF5 file in OANet's layout: a group per key, a dataset per pair."""
    with h5py.File(path, "w") as f:
        values = {
            "xs": xs[None],
            "ys": np.where(inlier, 1e-6, 1e-2)[:, None],
            "Rs": np.eye(3),
            "ts": np.ones((3, 1)),
            "cx1s": [160.0],
            "cy1s": [120.0],
            "cx2s": [160.0],
            "cy2s": [120.0],
            "f1s": [[200.0, 200.0]],
            "f2s": [[200.0, 200.0]],
        }
        for key, value in values.items():
            f.create_group(key)["0"] = np.asarray(value)


def test_cli_renders_hdf5_pair_with_predictions(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    xs, inlier = synthetic_pair(n=400, seed=5)
    write_oanet_file(tmp_path / "pairs.hdf5", xs, inlier)
    np.savez(
        tmp_path / "preds.npz",
        logits=np.where(inlier | (np.arange(400) % 4 == 0), 2.0, -2.0),
        pose_error_deg=3.25,
    )
    out = tmp_path / "cli.png"
    code = cli_main(
        [
            "--data",
            str(tmp_path / "pairs.hdf5"),
            "--pair",
            "0",
            "--out",
            str(out),
            "--predictions",
            str(tmp_path / "preds.npz"),
            "--size",
            "640",
            "320",
        ]
    )
    assert code == 0 and capsys.readouterr().out.strip() == str(out)
    rgb = read_rgb(out)
    assert rgb.shape == (320, 640, 3)
    view = layout((640, 320)).pair.crop(rgb)
    assert colour_pixels(view, "fp") > 50 and colour_pixels(view, "tp") > 50
    assert (
        cli_main(
            [
                "--data",
                str(tmp_path / "pairs.hdf5"),
                "--pair",
                "7",
                "--out",
                str(out),
                "--overwrite",
            ]
        )
        == 2
    )
    assert "no pair 7" in capsys.readouterr().err


def test_cli_show_without_display(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    xs, inlier = synthetic_pair(n=100)
    write_oanet_file(tmp_path / "pairs.hdf5", xs, inlier)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert cli_main(["--data", str(tmp_path / "pairs.hdf5"), "--pair", "0", "--show"]) == 2
    assert "needs a display" in capsys.readouterr().err


def test_input_check_serves_two_view_and_3d_matches(tmp_path: Path) -> None:
    from corrnet.visualization import render_registration
    from corrnet.visualization.registration import RIGID_COLUMNS

    mask = np.zeros(5, bool)
    xs, inlier, kept = check_inputs(np.zeros((5, 6), np.float32), mask, mask, RIGID_COLUMNS)
    assert xs.dtype == np.float64 and xs.shape == (5, 6) and inlier.shape == kept.shape == (5,)
    with pytest.raises(
        ValueError, match=r"xs must have shape \(N, 4\) as \[x1, y1, x2, y2\], got \(5, 6\)"
    ):
        check_inputs(xs, mask, mask)
    with pytest.raises(
        ValueError, match=r"xs must have shape \(N, 6\) as \[x1, y1, z1, x2, y2, z2\]"
    ):
        render_registration(
            tmp_path / "r.png", xs[:, :3], xs[:, 3:], xs[:, :4], mask, mask, np.eye(3), np.zeros(3)
        )
    with pytest.raises(ValueError, match=r"is_kept must have shape \(5,\), got \(4,\)"):
        render_registration(
            tmp_path / "r.png", xs[:, :3], xs[:, 3:], xs, mask, mask[:4], np.eye(3), np.zeros(3)
        )
    assert not (tmp_path / "r.png").exists()
