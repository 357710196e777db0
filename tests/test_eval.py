"""Relative-pose evaluation: estimators, the evaluation loop, reports and eval.py."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from corrnet.datasets.oanet_hdf5 import INTRINSICS_KEYS, SIDE_INFO_KEYS
from corrnet.datasets.sample import episym, intrinsics, make_sample
from corrnet.eval.estimators import ESTIMATORS, PoseLibEstimator, estimate_pose
from corrnet.eval.evaluate import (
    METHODS,
    evaluate,
    inlier_scores,
    inputs_needed,
    run_network,
    torch_threads,
)
from corrnet.eval.predict import FALLBACK_TOP_K, kept_matches
from corrnet.eval.report import REPORT_FILES, fresh_dir, summarize, write_report
from corrnet.geometry import essential_from_pose

ROOT = Path(__file__).resolve().parents[1]
METRICS = {
    "mAP5",
    "mAP10",
    "mAP20",
    "auc5",
    "auc10",
    "auc20",
    "precision",
    "recall",
    "f1",
    "ms_per_pair",
}
OLD_METHODS = ("corrnet", "corrnet+ransac", "corrnet+magsac", "ransac", "ratio+ransac")
"""The methods of report.json before PoseLib: new methods only add names."""
K = intrinsics(600.0, 620.0, 320.0, 240.0)
"""Pixel intrinsics of the toy pairs (PoseLib's threshold is in pixels)."""


def rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    return cv2.Rodrigues(axis / np.linalg.norm(axis) * np.deg2rad(rng.uniform(5, max_deg)))[0]


def pair(seed: int, n: int = 400, inliers: int = 40, noise: float = 0.0) -> dict:
    """A sample with ``inliers`` exact (or noisy, std ``noise`` normalised) matches first,
    then random ones far from their epipolar lines; ratios 0.5 on inliers, 0.9 on outliers."""
    rng = np.random.default_rng(seed)
    R, t = rotation(rng, 20), rng.normal(size=3)
    t /= np.linalg.norm(t)
    X1 = rng.uniform(-2, 2, (n, 3)) + [0, 0, 8]
    X2 = X1 @ R.T + t
    xs = np.concatenate([X1[:, :2] / X1[:, 2:], X2[:, :2] / X2[:, 2:]], 1)
    xs[:inliers] += rng.normal(0, noise, (inliers, 4))
    wrong = np.arange(n) >= inliers
    while wrong.any():
        xs[wrong, 2:] = rng.uniform(-0.3, 0.3, (wrong.sum(), 2))
        wrong &= episym(xs, R, t) < 1e-3
    ratios = np.where(np.arange(n) < inliers, 0.5, 0.9)
    return make_sample(xs, episym(xs, R, t), R, t, ratios, np.ones(n), K, K, seed)


class Oracle:
    """Logits +10 on GT inliers and -10 elsewhere (or given logits per pair), E from GT
    (which the evaluation ignores: it computes every pose from the logits)."""

    def __init__(self, samples: list[dict], logits: list[np.ndarray] | None = None):
        self.samples, self.logits, self.calls = samples, logits, 0

    def __call__(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.samples[self.calls]
        assert torch.equal(features[0], s["features"])
        logits = (
            torch.as_tensor(self.logits[self.calls])
            if self.logits is not None
            else s["labels"] * 20 - 10
        )
        self.calls += 1
        return {
            "logits": logits[None].float(),
            "E": essential_from_pose(s["R"].double(), s["t"].double())[None],
        }


def test_oracle_is_perfect_and_random_logits_are_not():
    samples = [pair(seed) for seed in range(6)]
    for s in samples:
        assert s["labels"][:40].all() and not s["labels"][40:].any()
    result = evaluate(samples, Oracle(samples), workers=1, progress=False)
    summary = summarize(result)["methods"]
    for method in ("corrnet", "corrnet-8pt", "corrnet+ransac", "corrnet+magsac", "corrnet+poselib"):
        assert np.max(result.errors(method)) < 0.1, method
        assert summary[method]["mAP20"] == summary[method]["mAP5"] == 1.0
        assert summary[method]["auc5"] > 0.98
        assert summary[method]["precision"] == 1.0
    assert summary["corrnet"]["recall"] == 1.0
    assert summary["ransac"]["mAP5"] < 1.0  # 10 % inliers defeat plain RANSAC in 1000 iterations
    rng = np.random.default_rng(0)
    noise = [rng.normal(size=len(s["xs"])) for s in samples]

    class Random(Oracle):
        def __call__(self, features):
            out = super().__call__(features)
            return {"logits": out["logits"], "E": torch.as_tensor(rng.normal(size=(1, 3, 3)))}

    random = summarize(evaluate(samples, Random(samples, noise), workers=1, progress=False))[
        "methods"
    ]
    assert random["corrnet"]["mAP20"] <= 0.2 and random["corrnet+ransac"]["mAP20"] <= 0.5
    assert random["corrnet"]["precision"] < 0.2


def test_precision_recall_by_hand_and_ransac_mask():
    samples = [pair(10), pair(11)]
    labels = [s["labels"].numpy() > 0.5 for s in samples]
    assert labels[0][:40].all() and not labels[0][40:].any()
    logits = [np.full(400, -1.0), np.full(400, -1.0)]
    logits[0][:30] = logits[0][100:110] = 1.0  # TP 30, FP 10, FN 10
    logits[1][:80] = 1.0  # TP 40, FP 40, FN 0
    result = evaluate(
        samples,
        Oracle(samples, logits),
        methods=["corrnet-8pt", "corrnet", "corrnet+ransac"],
        workers=1,
        progress=False,
    )
    summary = summarize(result)["methods"]
    corrnet = summary["corrnet-8pt"]  # its inliers are the kept matches
    p, r = (0.75 + 0.5) / 2, (0.75 + 1.0) / 2
    assert summary["corrnet"]["precision"] > 0.9  # the robust pose's inliers drop most FP
    assert np.all(result.errors("corrnet") < 1.0)
    assert corrnet["precision"] == pytest.approx(p) and corrnet["recall"] == pytest.approx(r)
    assert corrnet["f1"] == pytest.approx(2 * p * r / (p + r))
    for row, s, lg, lab in zip(result.of("corrnet+ransac"), samples, logits, labels):
        kept = np.flatnonzero(lg > 0)
        cv2.setRNGSeed(1234)
        _, mask = cv2.findEssentialMat(
            s["xs"].double().numpy()[kept, :2],
            s["xs"].double().numpy()[kept, 2:],
            np.eye(3),
            method=cv2.RANSAC,
            prob=0.999,
            threshold=1e-3,
            maxIters=1000,
        )
        expected = np.zeros(400, bool)
        expected[kept[mask.ravel() > 0]] = True
        assert np.array_equal(row.selected, expected)
        tp = (expected & lab).sum()
        assert (row.precision, row.recall) == pytest.approx((tp / expected.sum(), tp / lab.sum()))


def test_run_network_returns_the_outputs_asked_for_as_float64_rows():
    n = 12
    sample = {"features": torch.zeros(n, 6)}
    rigid = lambda f: {
        "logits": torch.ones(1, n),
        "R": torch.eye(3)[None],
        "t": torch.ones(1, 3),
        "stage_logits": [torch.ones(1, n)],
    }
    net, ms = run_network(sample, rigid, ("logits", "R", "t"))
    assert set(net) == {"logits", "R", "t"} and ms >= 0
    assert net["logits"].shape == (n,) and net["R"].shape == (3, 3) and net["t"].shape == (3,)
    assert all(v.dtype == torch.float64 for v in net.values())
    assert set(run_network(sample, rigid)[0]) == {"logits"}  # no weights given: left out
    with pytest.raises(ValueError, match=r"predictor: expected 'logits' \(1, 12\)"):
        run_network(sample, lambda f: {"logits": torch.ones(1, n - 1)})
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    with torch_threads(None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before


def test_kept_matches_fallback_and_zero_division():
    logits = np.array([-3.0, 2.0, -1.0, -2.0, -0.5, -4.0, -5.0, -6.0, -7.0, -8.0])
    kept = kept_matches(torch.as_tensor(logits)[None])[0]
    assert kept.sum() == FALLBACK_TOP_K and not kept[[-1, -2]].any()
    many = kept_matches(torch.as_tensor(np.r_[np.ones(9), -np.ones(3)])[None])
    assert many.sum() == 9
    assert inlier_scores(np.zeros(5, bool), np.zeros(5, bool)) == (0.0, 0.0)
    R, t, inl = estimate_pose(np.zeros((4, 4)))
    assert np.isnan(R).all() and np.isnan(t).all() and not inl.any()


def test_parallel_serial_and_order_give_identical_errors():
    samples = [pair(seed, n=300, inliers=90, noise=3e-4) for seed in range(20, 26)]
    methods = [
        "corrnet+ransac",
        "corrnet+magsac",
        "corrnet+poselib",
        "ransac",
        "ratio+ransac",
        "poselib",
    ]
    runs = [
        evaluate(s, Oracle(s), methods=methods, workers=w, progress=False)
        for s, w in ((samples, 1), (samples, 2), (samples[::-1], 2))
    ]
    for method in methods:
        serial, parallel = runs[0].errors(method), runs[1].errors(method)
        assert np.array_equal(serial, parallel)
        assert np.array_equal(serial, runs[2].errors(method)[::-1])
        assert np.all(serial > 0) and np.all(serial < 10)  # noisy yet solved: RANSAC did work


def test_report_schema_and_no_silent_overwrite(tmp_path):
    samples = [pair(seed, n=200, inliers=60) for seed in range(30, 33)]
    result = evaluate(samples, Oracle(samples), workers=1, progress=False, dataset="toy")
    summary = write_report(result, tmp_path / "r")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report == summary and set(report) == {"dataset", "pairs", "methods"}
    assert (
        report["dataset"] == "toy"
        and report["pairs"] == 3
        and list(report["methods"]) == list(METHODS)
    )
    assert set(OLD_METHODS) < set(METHODS) and {
        "poselib",
        "ratio+poselib",
        "corrnet+poselib",
    } < set(METHODS)
    for metrics in report["methods"].values():
        assert set(metrics) == METRICS and all(isinstance(v, float) for v in metrics.values())
        assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k != "ms_per_pair")
    rows = list(csv.DictReader((tmp_path / "r" / "per_pair.csv").open()))
    assert len(rows) == 3 * len(METHODS)
    assert list(rows[0]) == ["pair", "method", "err_R", "err_t", "err", "precision", "recall", "ms"]
    ransac = [float(r["err"]) for r in rows if r["method"] == "ransac"]
    assert report["methods"]["ransac"]["mAP5"] == pytest.approx(
        np.mean(np.array(ransac) < 5), abs=1e-9
    )
    assert "| corrnet+magsac |" in (tmp_path / "r" / "report.md").read_text()
    before = {n: (tmp_path / "r" / n).read_bytes() for n in REPORT_FILES}
    with pytest.raises(FileExistsError, match="already holds a report"):
        write_report(evaluate(samples[:1], None, workers=1, progress=False), tmp_path / "r")
    assert before == {n: (tmp_path / "r" / n).read_bytes() for n in REPORT_FILES}
    assert fresh_dir(tmp_path / "r") == tmp_path / "r-2"
    assert write_report(result, tmp_path / "r", overwrite=True)["pairs"] == 3


def write_oanet(path: Path, samples: list[dict], drop: tuple[str, ...] = ()) -> None:
    """OANet's layout, written here with h5py (independent of the dataset writer), without the
    groups ``drop``."""
    with h5py.File(path, "w") as f:
        for i, s in enumerate(samples):
            n = len(s["xs"])
            arrays = {
                "xs": s["xs"].numpy().reshape(1, n, 4),
                "ys": s["ys"].numpy().reshape(n, 1),
                "Rs": s["R"].numpy(),
                "ts": s["t"].numpy().reshape(3, 1),
                "ratios": s["ratios"].numpy(),
                "mutuals": s["mutuals"].numpy(),
                "cx1s": [K[0, 2]],
                "cy1s": [K[1, 2]],
                "cx2s": [K[0, 2]],
                "cy2s": [K[1, 2]],
                "f1s": [[K[0, 0], K[1, 1]]],
                "f2s": [[K[0, 0], K[1, 1]]],
            }
            for key, value in arrays.items():
                if key not in drop:
                    f.require_group(key).create_dataset(str(i), data=np.asarray(value, np.float32))


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_eval_cli_end_to_end_on_oanet_hdf5(tmp_path):
    samples = [pair(seed, n=300, inliers=150) for seed in range(40, 44)]
    write_oanet(tmp_path / "toy.hdf5", samples)
    out = tmp_path / "out"
    done = run_eval(
        "--data",
        str(tmp_path / "toy.hdf5"),
        "--methods",
        "ransac",
        "ratio+ransac",
        "--out",
        str(out),
        "--workers",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert "ratio+ransac" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"] == 4 and list(report["methods"]) == ["ransac", "ratio+ransac"]
    for metrics in report["methods"].values():
        assert (
            metrics["mAP20"] == 1.0 and metrics["precision"] == 1.0
        )  # exact matches, 50 % inliers
    # ratio filtering keeps only the true matches, of which RANSAC finds all
    assert report["methods"]["ratio+ransac"]["recall"] == 1.0
    again = run_eval("--data", str(tmp_path / "toy.hdf5"), "--methods", "ransac", "--out", str(out))
    assert again.returncode != 0 and "already holds a report" in again.stderr


def test_poselib_methods_fail_cleanly_and_repeat_exactly():
    """A pair whose ratio subset has 3 matches scores 180° / 90° under ratio+poselib (no
    exception); a second run gives the same errors (PoseLib's seed is fixed)."""
    samples = [pair(60, n=300, inliers=60, noise=3e-4), pair(61, n=300, inliers=60, noise=3e-4)]
    samples[1]["ratios"][:] = 0.9
    samples[1]["ratios"][:3] = 0.5
    methods = ["poselib", "ratio+poselib", "corrnet+poselib"]
    runs = [
        evaluate(samples, Oracle(samples), methods=methods, workers=1, progress=False)
        for _ in range(2)
    ]
    failed = runs[0].of("ratio+poselib")[1]
    assert (failed.err_R, failed.err_t, failed.err) == (180.0, 90.0, 180.0)
    assert not failed.selected.any()
    assert runs[0].of("ratio+poselib")[0].err < 1.0 and runs[0].of("corrnet+poselib")[1].err < 1.0
    for method in methods:
        assert np.array_equal(runs[0].errors(method), runs[1].errors(method))


def test_poselib_threshold_option_reaches_the_estimator():
    """A threshold far below the noise keeps almost no inliers; eval.py's option sets it."""
    samples = [pair(62, n=200, inliers=100, noise=2e-3)]  # ~1.2 px of noise
    tight = {"poselib": PoseLibEstimator(max_epipolar_error=0.05)}
    loose, strict = (
        evaluate(samples, None, ["poselib"], workers=1, progress=False, estimators=e)
        for e in (None, tight)
    )
    assert loose.of("poselib")[0].selected.sum() > 3 * strict.of("poselib")[0].selected.sum()
    assert ESTIMATORS["poselib"].max_epipolar_error == 1.0
    done = run_eval("--help")
    assert done.returncode == 0 and "--poselib-threshold" in done.stdout
    assert all(m in done.stdout for m in METHODS)
    bad = run_eval("--data", "synthetic", "--methods", "poselib", "--poselib-threshold", "0")
    assert bad.returncode == 2 and "--poselib-threshold" in bad.stderr
    bad = run_eval("--data", "synthetic", "--methods", "poselib", "--seed", "-3")
    assert bad.returncode == 2 and "--seed" in bad.stderr and "got -3" in bad.stderr


@pytest.mark.parametrize("case", ["missing", "no-labels", "foreign-checkpoint"])
def test_eval_cli_bad_input_fails_clearly(tmp_path, case):
    data = tmp_path / "toy.hdf5"
    args = ["--methods", "ransac"]
    if case == "no-labels":
        write_oanet(data, [pair(50)], drop=("ys",))
    elif case == "foreign-checkpoint":
        write_oanet(data, [pair(50)])
        torch.save({"state_dict": {"conv.weight": torch.zeros(3)}}, tmp_path / "other.pt")
        args = ["--checkpoint", str(tmp_path / "other.pt"), "--methods", "corrnet"]
    done = run_eval("--data", str(data), "--out", str(tmp_path / "out"), *args)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and done.stderr.startswith("eval.py: error:")
    expected = {
        "missing": "no such",
        "no-labels": "ys",
        "foreign-checkpoint": "not a corrnet checkpoint",
    }
    assert expected[case] in done.stderr and str(tmp_path) in done.stderr
    assert not (tmp_path / "out").exists()


def test_inputs_needed_names_the_ratio_subset_and_the_pixel_estimators():
    needs = inputs_needed(
        ["corrnet", "ransac", "ratio+ransac", "poselib", "ratio+poselib", "corrnet+magsac"]
    )
    assert needs == {
        "ratios": ["ratio+ransac", "ratio+poselib"],
        "intrinsics": ["poselib", "ratio+poselib"],
    }
    assert inputs_needed(["corrnet", "corrnet-8pt", "ransac", "corrnet+ransac"]) == {}


@pytest.mark.parametrize(
    "drop, methods, key",
    [
        (INTRINSICS_KEYS, ["ransac", "corrnet+poselib"], "'f1s'"),
        (("ratios",), ["ransac", "ratio+ransac"], "'ratios'"),
        (
            SIDE_INFO_KEYS,
            ["corrnet"],
            "side_info",
        ),  # the shipped weights take the ratio and mutual flag
    ],
)
def test_eval_cli_refuses_a_file_without_the_groups_a_method_needs(tmp_path, drop, methods, key):
    """Absent groups would read as zeros (ratios) or the identity (K): refused, not scored."""
    data = tmp_path / "toy.hdf5"
    write_oanet(data, [pair(51, n=100, inliers=50)], drop=drop)
    done = run_eval("--data", str(data), "--out", str(tmp_path / "out"), "--methods", *methods)
    assert (
        done.returncode == 2
        and done.stderr.startswith("eval.py: error:")
        and "Traceback" not in done.stderr
    )
    assert str(data) in done.stderr and key in done.stderr and not (tmp_path / "out").exists()
    if drop != SIDE_INFO_KEYS:
        assert methods[-1] in done.stderr
        done = run_eval(
            "--data", str(data), "--out", str(tmp_path / "out"), "--methods", methods[0]
        )
        assert done.returncode == 0, done.stderr
