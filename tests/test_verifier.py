"""corrnet.Verifier: the pipeline of ``corrnet match`` on given matches, batched and one by
one, its bad-input errors and its confidence checks."""

from __future__ import annotations

import math
import multiprocessing

import cv2
import numpy as np
import pytest
import torch

import corrnet
import corrnet.verifier as cv
from corrnet.checkpoint import FORMAT, FORMAT_VERSION, PRETRAINED, load_model
from corrnet.datasets.prepare import putative_matches, sift_features
from corrnet.datasets.sample import to_pixels
from corrnet.datasets.synthetic import generate_pair
from corrnet.eval.estimators import PoseLibEstimator, init_worker
from corrnet.eval.predict import kept_matches
from corrnet.models import CorrNet, CorrNetConfig, make_predictor
from tests.test_match import K, _render, _texture


@pytest.fixture(scope="module")
def verifier() -> cv.Verifier:
    return cv.Verifier()


@pytest.fixture(scope="module")
def views() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two views of a textured wall and panel (as tests/test_match.py renders them) and an
    image of another texture: (view1, view2, unrelated), uint8 (480, 640, 3)."""
    rng = np.random.default_rng(0)
    wall = (np.array([-6.0, -6.0, 8.0]), np.array([12 / 512, 0, 0]), np.array([0, 12 / 512, 0]))
    panel = (np.array([-1.5, -1.5, 4.0]), np.array([3 / 512, 0, 0]), np.array([0, 3 / 512, 0]))
    planes = [(_texture(rng), *wall), (_texture(rng), *panel)]
    angle = np.radians(6)
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    view1 = _render(planes, np.eye(3), np.zeros(3))
    view2 = _render(planes, R, np.array([-1.0, 0.1, 0.2]))
    other = _render([(_texture(np.random.default_rng(7)), *wall)], np.eye(3), np.zeros(3))
    return view1, view2, other


@pytest.fixture(scope="module")
def matches(views):
    """SIFT nearest-neighbour matches of view1 -> view2 (corrnet.datasets.prepare)."""
    return putative_matches(sift_features(views[0]), sift_features(views[1]), K, K)


def _args(m, K1=K, K2=K) -> dict:
    return dict(kpts1=m.uv1, kpts2=m.uv2, K1=K1, K2=K2, ratios=m.ratios, mutuals=m.mutuals)


def test_same_pose_as_the_match_pipeline(verifier, matches, views):
    """Network on [xs, ratio, mutual], kept rule, PoseLib on the kept matches in pixels, each
    step from its own module: the Verifier's pose equals it."""
    model = load_model(PRETRAINED)
    x = np.concatenate([matches.xs, matches.ratios[:, None], matches.mutuals[:, None]], 1)
    logits = make_predictor(model)(torch.as_tensor(x, dtype=torch.float32)[None])["logits"]
    logits = logits[0].double().numpy()
    kept = kept_matches(torch.from_numpy(logits)[None])[0].numpy()
    R, t, inliers = PoseLibEstimator().estimate(matches.xs[kept], K, K)
    v = verifier.verify(**_args(matches))
    np.testing.assert_allclose(v.logits, logits, atol=1e-6)
    np.testing.assert_array_equal(v.kept, kept)
    np.testing.assert_array_equal(np.flatnonzero(v.inliers), np.flatnonzero(kept)[inliers])
    np.testing.assert_allclose(v.R, R, atol=1e-6)
    np.testing.assert_allclose(v.t, t, atol=1e-6)
    np.testing.assert_allclose(v.scores, 1 / (1 + np.exp(-logits)), atol=1e-6)
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    np.testing.assert_allclose(v.E, tx @ R, atol=1e-6)
    assert v.num_inliers == inliers.sum() > 200 and v.confident and v.warnings == []
    # torch inputs and K as (fx, fy, cx, cy) give the same verdict
    fxfycxcy = (K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    w = verifier.verify(
        torch.from_numpy(matches.uv1),
        torch.from_numpy(matches.uv2),
        fxfycxcy,
        torch.tensor(fxfycxcy),
        ratios=torch.from_numpy(matches.ratios),
        mutuals=torch.from_numpy(matches.mutuals),
    )
    np.testing.assert_array_equal(w.inliers, v.inliers)
    np.testing.assert_array_equal(w.R, v.R)
    # match_images on the images is this verification of their SIFT matches
    result = corrnet.match_images(*views[:2], K, K)
    np.testing.assert_array_equal(result.inliers, v.inliers)
    np.testing.assert_array_equal(result.R, v.R)


def _pairs(count: int) -> list[dict]:
    """Synthetic pairs of different sizes as verify arguments (pixels from the generator)."""
    pairs = []
    for i, n in enumerate((2000, 700, 1500, 300, 1100)[:count]):
        s = {k: v.numpy().astype(np.float64) for k, v in generate_pair(5, i, num_matches=n).items()}
        pairs.append(
            dict(
                kpts1=to_pixels(s["xs"][:, :2], s["K1"]),
                kpts2=to_pixels(s["xs"][:, 2:], s["K2"]),
                K1=s["K1"],
                K2=s["K2"],
                ratios=s["ratios"],
                mutuals=s["mutuals"],
            )
        )
    return pairs


def test_verify_many_equals_one_by_one(verifier):
    pairs = _pairs(5)
    single = [verifier.verify(**p) for p in pairs]
    with multiprocessing.get_context("fork").Pool(2, initializer=init_worker) as pool:
        in_pool = [verifier.verify_many(pairs, batch_size=3, pool=pool) for _ in range(2)]
        assert pool.apply(abs, (-1,)) == 1  # the caller's pool is left open
    for batched in (
        verifier.verify_many(pairs, batch_size=2, workers=2),
        verifier.verify_many([tuple(p.values()) for p in pairs], batch_size=5, workers=1),
        *in_pool,
    ):
        assert len(batched) == len(pairs)
        for one, many in zip(single, batched):
            np.testing.assert_allclose(many.logits, one.logits, atol=1e-4)
            np.testing.assert_array_equal(many.kept, one.kept)
            np.testing.assert_array_equal(many.inliers, one.inliers)
            np.testing.assert_array_equal(many.R, one.R)
            np.testing.assert_array_equal(many.t, one.t)
            assert (many.confident, many.warnings) == (one.confident, one.warnings)
    with pytest.raises(ValueError, match=r"^pairs\[1\]: kpts2: expected pixel coordinates"):
        verifier.verify_many([pairs[0], {**pairs[1], "kpts2": pairs[1]["kpts2"][:-1]}])
    with pytest.raises(ValueError, match=r"^pairs\[0\]: expected verify's arguments \['kpts1'"):
        verifier.verify_many([{**pairs[0], "gt": None}])
    with pytest.raises(ValueError, match=r"^pairs\[0\]: expected .* got 3 values"):
        verifier.verify_many([tuple(pairs[0].values())[:3]])


def _one_line_error(match: str, fn, *args, **kwargs) -> None:
    """fn(*args, **kwargs) raises a one-line ValueError matching ``match``."""
    with pytest.raises(ValueError, match=match) as err:
        fn(*args, **kwargs)
    assert len(str(err.value).splitlines()) == 1, str(err.value)


def test_bad_input(verifier, matches):
    good = _args(matches)
    n = len(matches.uv1)
    cases = {
        "kpts1": (matches.uv1[:, :1], r"kpts1: expected pixel coordinates of shape \(N, 2\)"),
        "kpts2": (matches.uv2[:-3], rf"kpts2: expected pixel coordinates of shape \({n}, 2\)"),
        "K1": ((500.0, 0.0, 319.5, 239.5), "K1: expected positive focal lengths"),
        "K2": (np.ones((3, 3)), r"K2: expected \[\[fx, 0, cx\]"),
        "ratios": (matches.ratios[:-1], rf"ratios: expected one value per match, shape \({n},\)"),
        "mutuals": (np.full(n, 0.5), r"mutuals: expected booleans"),
        "scales1": (np.zeros(n), "scales1: expected positive sizes"),
        "angles2": (np.ones((n, 2)), "angles2: expected one value per match"),
    }
    for name, (value, match) in cases.items():
        _one_line_error("^" + match, verifier.verify, **{**good, name: value})
    nan = matches.uv1.copy()
    nan[5] = np.nan
    _one_line_error(
        r"^kpts1: expected finite pixel coordinates, got NaN or inf in 1 rows \(first: row 5\)",
        verifier.verify,
        **{**good, "kpts1": nan},
    )
    few = {k: v[:7] if k in ("kpts1", "kpts2", "ratios", "mutuals") else v for k, v in good.items()}
    _one_line_error("^kpts1: expected at least 8 matches, got 7", verifier.verify, **few)
    _one_line_error(
        r"^ratios, mutuals: missing; the weights corrnet-real.pt read them: "
        r"pass ratios=\(N,\) the Lowe ratio .*; mutuals=\(N,\) whether",
        cv.Verifier(PRETRAINED).verify,  # given weights (the default ones choose: see below)
        matches.uv1,
        matches.uv2,
        K,
        K,
    )
    _one_line_error("^threshold: expected a positive number", cv.Verifier, threshold=0)
    _one_line_error("^device: ", cv.Verifier, device="nonsense")
    # scales and angles are validated, and unused by these weights
    v = verifier.verify(**good, scales1=np.ones(n), angles2=np.zeros(n))
    np.testing.assert_array_equal(v.inliers, verifier.verify(**good).inliers)


def _weights(tmp_path, **config) -> str:
    """An exported weights file of a small network (random weights)."""
    net = CorrNet(CorrNetConfig(width=16, heads=2, num_states=2, blocks_per_stage=2, **config))
    path = tmp_path / "small.pt"
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "net": net.config.to_dict()}
    torch.save({**payload, "meta": {}, "state_dict": net.state_dict()}, path)
    return path


def test_inputs_follow_the_weights(tmp_path, matches):
    assert cv.Verifier().needs == ("ratios", "mutuals")  # the shipped weights: C = 6
    coordinates_only = cv.Verifier(_weights(tmp_path, side_info=False))
    assert coordinates_only.needs == ()
    v = coordinates_only.verify(matches.uv1, matches.uv2, K, K)
    assert v.logits.shape == (len(matches.uv1),) and v.kept.sum() >= 8
    assert cv.Verifier(_weights(tmp_path, side_info=True)).needs == ("ratios", "mutuals")
    _one_line_error(
        "small.pt: a rigid network; the verifier feeds two-view weights",
        cv.Verifier,
        _weights(tmp_path, geometry="rigid"),
    )


def test_parallax_closed_form():
    """Matches at (±a, 0), (0, ±a) expanding by 10 % (forward motion): by symmetry the best
    rotation is the identity, so every match's angle is atan(1.1 a) - atan(a)."""
    a = 0.3
    x1 = np.array([[a, 0], [-a, 0], [0, a], [0, -a]])
    xs = np.concatenate([x1, 1.1 * x1], 1)
    assert cv.parallax_deg(xs) == pytest.approx(math.degrees(math.atan(0.33) - math.atan(0.3)))
    # a pure rotation (any) leaves nothing
    R = cv2.Rodrigues(np.array([0.1, -0.2, 0.05]))[0]
    f1 = np.column_stack([np.random.default_rng(0).uniform(-0.5, 0.5, (50, 2)), np.ones(50)])
    f2 = f1 @ R.T
    xs = np.concatenate([f1[:, :2], f2[:, :2] / f2[:, 2:]], 1)
    assert cv.parallax_deg(xs) < 1e-6


def test_confidence_identical_and_unrelated(views):
    view1, view2, other = views
    good = corrnet.match_images(view1, view2, K, K)
    assert good.confident and good.warnings == [] and good.parallax_deg > cv.MIN_PARALLAX_DEG
    same = corrnet.match_images(view1, view1, K, K)
    assert not same.confident and same.parallax_deg < 1e-3
    assert [w.split(":")[0] for w in same.warnings] == ["translation undefined"]
    unrelated = corrnet.match_images(view1, other, K, K)
    assert not unrelated.confident and unrelated.num_inliers < cv.MIN_INLIERS
    assert any(w.startswith("too few inliers") for w in unrelated.warnings)


def test_ratio_free_weights_verify_matches_without_ratios(verifier, matches):
    """Matches without ratio or mutual flag: the shipped weights name what is missing and the
    ratio-free weights, which read SIFT's scales and orientations instead, find the pose that
    the shipped weights find with ratios (within a degree)."""
    from corrnet.checkpoint import PRETRAINED_RATIO_FREE

    _one_line_error(
        r"^ratios, mutuals: missing; the shipped weights need either ratios=.* and mutuals=.*, "
        r"or \(for the ratio-free weights, corrnet.checkpoint.PRETRAINED_RATIO_FREE\) "
        r"scales1, scales2, angles1, angles2=\(N,\) each",
        verifier.verify,
        matches.uv1,
        matches.uv2,
        K,
        K,
    )
    _one_line_error(  # weights given explicitly: no choice is made for the caller
        r"Verifier\(corrnet.checkpoint.PRETRAINED_RATIO_FREE\)$",
        cv.Verifier(PRETRAINED).verify,
        matches.uv1,
        matches.uv2,
        K,
        K,
        scales1=matches.sizes[:, 0],
        scales2=matches.sizes[:, 1],
        angles1=matches.angles[:, 0],
        angles2=matches.angles[:, 1],
    )
    ratio_free = cv.Verifier(PRETRAINED_RATIO_FREE)
    assert ratio_free.needs == ("scales1", "scales2", "angles1", "angles2")
    sizes, angles = matches.sizes, matches.angles
    v = ratio_free.verify(
        matches.uv1,
        matches.uv2,
        K,
        K,
        scales1=sizes[:, 0],
        scales2=sizes[:, 1],
        angles1=angles[:, 0],
        angles2=angles[:, 1],
    )
    reference = verifier.verify(**_args(matches))
    assert v.confident and v.num_inliers > 100
    rotation = np.degrees(np.arccos(np.clip((np.trace(v.R @ reference.R.T) - 1) / 2, -1, 1)))
    translation = np.degrees(np.arccos(np.clip(v.t @ reference.t, -1, 1)))
    assert rotation < 1 and translation < 1


def test_same_pose_as_eval_on_real_dev(real_dev, tmp_path, verifier):
    """Real-dev pairs prepared as ``corrnet prepare --raw`` does and scored by ``eval.py``'s
    ``corrnet+poselib``: the Verifier, given the same matches as pixel arrays with their ratios
    and mutual flags, reaches the same pose errors (1e-6 degrees)."""
    from corrnet.datasets.oanet_hdf5 import OANetPairs
    from corrnet.datasets.prepare import prepare, read_sequence
    from corrnet.eval.evaluate import evaluate
    from corrnet.geometry.pose import pose_errors

    specs = (
        read_sequence(real_dev / "fountain_P11")[:2] + read_sequence(real_dev / "redkitchen_a")[:2]
    )
    out = tmp_path / "four.hdf5"
    assert prepare(specs, out, workers=1) == 4
    pairs = OANetPairs(out, side_info=True)
    result = evaluate(
        pairs, make_predictor(load_model(PRETRAINED)), ["corrnet+poselib"], 1, progress=False
    )
    for row in result.of("corrnet+poselib"):
        s = {k: v.numpy() if torch.is_tensor(v) else v for k, v in pairs[row.position].items()}
        K1, K2 = s["K1"].astype(np.float64), s["K2"].astype(np.float64)
        xs = s["xs"].astype(np.float64)
        v = verifier.verify(
            to_pixels(xs[:, :2], K1),
            to_pixels(xs[:, 2:], K2),
            K1,
            K2,
            ratios=s["ratios"],
            mutuals=s["mutuals"],
        )
        err_R, err_t = pose_errors(
            torch.from_numpy(v.R),
            torch.from_numpy(v.t),
            torch.from_numpy(s["R"]).double(),
            torch.from_numpy(s["t"]).double(),
        )
        assert abs(float(err_R) - row.err_R) < 1e-6 and abs(float(err_t) - row.err_t) < 1e-6
