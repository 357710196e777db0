"""Hostile and careless input to every command: one line naming file / pair / key and what was
expected, exit status 2, nothing already written lost, no numbers from data that should be refused.

Everything here is built in tmp_path (tiny textured images, calibration files, HDF5 files), so it
needs no shared data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

import corrnet.datasets.prepare as prep
from corrnet.atomic import atomic_path, remove_stale_temporaries
from corrnet.checkpoint import load_model, read_checkpoint
from corrnet.commands.eval import main as eval_main
from corrnet.commands.merge import main as merge_main
from corrnet.commands.prepare import main as prepare_main
from corrnet.commands.synthetic import main as synthetic_main
from corrnet.commands.viz import main as viz_main
from corrnet.datasets import BadPairError, OANetPairs, generate_pair
from corrnet.geometry.checks import intrinsics_problem, rotation_problem, translation_problem

ROOT = Path(__file__).resolve().parents[1]


def call(main, args: list[str]) -> int:
    """Exit status of a command's ``main(args)`` (argparse's errors raise SystemExit)."""
    try:
        return main(args)
    except SystemExit as exit:
        return exit.code


def refused(capsys: pytest.CaptureFixture, code: int, *needles: str) -> str:
    """Assert exit status 2 and one stderr line ``prog: error: ...`` holding every needle."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [
        s for s in err.replace("\r", "\n").splitlines() if s.strip() and "it/s]" not in s
    ]  # no progress bars
    line = lines[-1]
    assert line.count(": error: ") == 1, err
    if "usage:" not in err:  # argparse's own errors print the usage first
        assert len(lines) == 1, err
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def snapshot(path: Path) -> bytes:
    return path.read_bytes()


# ---------------------------------------------------------------- geometry checks


def test_ground_truth_checks_against_closed_forms():
    c, s = np.cos(0.3), np.sin(0.3)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    assert rotation_problem(R) is None and rotation_problem(R.astype(np.float32)) is None
    for bad in (
        3 * R,
        np.zeros((3, 3)),
        R @ np.diag([1, 1, -1]),
        R + np.triu(np.ones((3, 3)), 1) * 0.01,
    ):
        assert "expected a rotation" in rotation_problem(bad)
    assert "NaN" in rotation_problem(np.full((3, 3), np.nan)) and "shape" in rotation_problem(
        np.eye(2)
    )
    K = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    assert intrinsics_problem(K) is None
    assert "positive focal" in intrinsics_problem(np.diag([0.0, 500, 1]))
    assert "NaN" in intrinsics_problem(np.where(np.eye(3) > 0, np.nan, 0))
    assert translation_problem([0, 0, 1e-9]) is None and "non-zero" in translation_problem(
        np.zeros(3)
    )


# ---------------------------------------------------------------- HDF5 reader and eval.py


def write_pairs(path: Path, count: int = 3, edit=None) -> Path:
    """``count`` synthetic pairs (N = 60) in OANet's layout, written with plain h5py; ``edit``
    changes pair 1's arrays (a dict of OANet keys) before writing."""
    with h5py.File(path, "w") as f:
        for i in range(count):
            s = generate_pair(5, i, "outdoor", 60)
            a = {
                "xs": s["xs"].numpy()[None],
                "ys": s["ys"].numpy()[:, None],
                "Rs": s["R"].numpy(),
                "ts": s["t"].numpy()[:, None],
                "ratios": s["ratios"].numpy(),
                "mutuals": s["mutuals"].numpy(),
                "cx1s": [0.0],
                "cy1s": [0.0],
                "cx2s": [0.0],
                "cy2s": [0.0],
                "f1s": [[1.0, 1.0]],
                "f2s": [[1.0, 1.0]],
            }
            if edit is not None and i == 1:
                edit(a)
            for key, value in a.items():
                f.require_group(key).create_dataset(str(i), data=np.asarray(value, np.float32))
    return path


BAD_PAIRS = {
    "rotation-scaled": (lambda a: a.update(Rs=3 * a["Rs"]), "Rs: expected a rotation"),
    "rotation-sheared": (
        lambda a: a.update(Rs=a["Rs"] + 0.2 * np.triu(np.ones((3, 3)), 1)),
        "Rs: expected a rotation",
    ),
    "rotation-zero": (lambda a: a.update(Rs=np.zeros((3, 3))), "Rs: expected a rotation"),
    "nan-ratios": (lambda a: a["ratios"].__setitem__(7, np.nan), "ratios: expected finite values"),
    "pixel-units": (lambda a: a.update(xs=a["xs"] * 1e6), "xs: expected normalised coordinates"),
    "zero-focal": (lambda a: a.update(f2s=[[0.0, 1.0]]), "f2s: expected positive focal lengths"),
    "zero-t": (lambda a: a.update(ts=np.zeros((3, 1))), "ts: expected a non-zero translation"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAIRS))
def test_reader_refuses_bad_ground_truth_and_inputs(tmp_path, case):
    edit, message = BAD_PAIRS[case]
    path = write_pairs(tmp_path / "d.hdf5", edit=edit)
    data = OANetPairs(path)
    data[0]
    with pytest.raises(BadPairError, match=rf"d.hdf5: pair 1: {message}"):
        data[1]
    with pytest.warns(UserWarning, match="skipped 1 of 3 bad pairs"):
        assert [int(s["index"]) for s in OANetPairs(path, on_bad="skip")] == [0, 2]


@pytest.mark.parametrize("case", ["rotation-scaled", "nan-ratios", "pixel-units"])
def test_eval_refuses_bad_pairs_instead_of_scoring_them(tmp_path, capsys, case):
    edit, message = BAD_PAIRS[case]
    path = write_pairs(tmp_path / "d.hdf5", edit=edit)
    before = snapshot(path)
    code = call(
        eval_main,
        [
            "--data",
            str(path),
            "--methods",
            "ratio+ransac",
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "1",
            "--quiet",
        ],
    )
    refused(capsys, code, "corrnet eval: error:", str(path), "pair 1", message)
    assert snapshot(path) == before and not (tmp_path / "out").exists()


def test_damaged_hdf5_names_the_file(tmp_path, capsys):
    path = write_pairs(tmp_path / "d.hdf5")
    with h5py.File(path, "r") as f:
        group, dataset = h5py.h5o.get_info(f["xs"].id).addr, h5py.h5o.get_info(f["Rs/1"].id).addr
    raw = bytearray(path.read_bytes())
    raw[dataset] ^= 0xFF  # pair 1's rotation: an unreadable object header
    (tmp_path / "pair.hdf5").write_bytes(raw)
    with pytest.raises(BadPairError, match=r"pair.hdf5: pair 1: cannot read its datasets"):
        OANetPairs(tmp_path / "pair.hdf5")[1]
    raw[group] ^= 0xFF  # the xs group itself
    (tmp_path / "group.hdf5").write_bytes(raw)
    code = call(
        eval_main,
        [
            "--data",
            str(tmp_path / "group.hdf5"),
            "--methods",
            "ransac",
            "--quiet",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    refused(capsys, code, str(tmp_path / "group.hdf5"), "damaged HDF5 file")


# ---------------------------------------------------------------- weights loader


def test_weights_loader_never_suggests_unsafe_loading(tmp_path, capsys):
    torch.save({"state_dict": np.zeros(3)}, tmp_path / "pickled.pt")
    (tmp_path / "text.pt").write_text("not torch")
    for name in ("pickled.pt", "text.pt"):
        with pytest.raises(ValueError) as err:
            load_model(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: not a corrnet checkpoint")
        assert "weights_only" not in str(err.value) and "\n" not in str(err.value)
    code = call(
        eval_main,
        [
            "--data",
            "synthetic",
            "--synthetic-pairs",
            "2",
            "--methods",
            "corrnet",
            "--checkpoint",
            str(tmp_path / "pickled.pt"),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    line = refused(capsys, code, str(tmp_path / "pickled.pt"), "not a corrnet checkpoint")
    assert "weights_only" not in line
    assert isinstance(read_checkpoint(ROOT / "corrnet/pretrained/corrnet-synthetic.pt"), dict)


# ---------------------------------------------------------------- data/synthetic.py


def test_synthetic_refuses_to_overwrite_and_empty_output(tmp_path, capsys):
    out = tmp_path / "real.hdf5"
    write_pairs(out)
    before = snapshot(out)
    refused(
        capsys,
        call(synthetic_main, ["--out", str(out), "--pairs", "2", "--num-matches", "50"]),
        str(out),
        "already exists",
        "--overwrite",
    )
    assert snapshot(out) == before
    refused(
        capsys,
        call(synthetic_main, ["--out", str(tmp_path / "empty.hdf5"), "--pairs", "0"]),
        "--pairs: expected at least 1",
    )
    assert not (tmp_path / "empty.hdf5").exists()
    with pytest.raises(ValueError, match="pairs: expected at least 1 pair"):
        from corrnet.datasets import write_synthetic

        write_synthetic(tmp_path / "empty.hdf5", 0)
    assert (
        call(
            synthetic_main,
            ["--out", str(out), "--pairs", "2", "--num-matches", "50", "--overwrite"],
        )
        == 0
    )
    assert len(OANetPairs(out)) == 2


# ---------------------------------------------------------------- data/merge.py


def test_merge_refuses_bad_inputs_and_keeps_the_output(tmp_path, capsys):
    a, out = write_pairs(tmp_path / "a.hdf5"), write_pairs(tmp_path / "out.hdf5", 2)
    before = snapshot(out)
    refused(capsys, call(merge_main, [str(a), "--out", str(out)]), str(out), "already exists")
    refused(capsys, call(merge_main, [str(a), "--out", str(a), "--overwrite"]), str(a), "input 1")
    refused(
        capsys,
        call(
            merge_main, [str(a), str(tmp_path / "missing.hdf5"), "--out", str(out), "--overwrite"]
        ),
        "missing.hdf5",
        "not found",
    )
    bad = write_pairs(tmp_path / "bad.hdf5", edit=lambda d: d.update(xs=d["xs"] * np.nan))
    refused(
        capsys,
        call(merge_main, [str(a), str(bad), "--out", str(out), "--overwrite"]),
        str(bad),
        "pair 1",
    )
    assert snapshot(out) == before
    assert call(merge_main, [str(a), str(a), "--out", str(out), "--overwrite"]) == 0
    assert len(OANetPairs(out)) == 6


# ---------------------------------------------------------------- temporary files of killed runs


def test_killed_writer_leaves_temporaries_the_next_run_removes(tmp_path):
    out = tmp_path / "syn.hdf5"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import os, sys\nfrom corrnet.atomic import atomic_path\n"
                "with atomic_path(sys.argv[1]) as tmp:\n"
                "    tmp.write_text('half')\n    os._exit(9)\n"
            ),
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert killed.returncode == 9
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".syn.hdf5.tmp")]
    assert len(stale) == 1 and not out.exists()
    with atomic_path(out) as live:  # a live writer's file is never taken for a stale one
        live.write_text("x")
        assert remove_stale_temporaries(tmp_path) == stale and live.exists()
    assert (
        call(
            synthetic_main,
            ["--out", str(out), "--pairs", "1", "--num-matches", "20", "--overwrite"],
        )
        == 0
    )
    assert [p.name for p in tmp_path.iterdir()] == ["syn.hdf5"]


# ---------------------------------------------------------------- visualisation CLI


def test_visualization_never_overwrites_an_input_or_existing_file(tmp_path, capsys):
    data = write_pairs(tmp_path / "v.hdf5")
    before = snapshot(data)
    refused(
        capsys,
        call(viz_main, ["--data", str(data), "--pair", "0", "--out", str(data)]),
        str(data),
        "is also the input --data",
    )
    refused(
        capsys,
        call(viz_main, ["--data", str(data), "--pair", "0", "--out", str(data), "--overwrite"]),
        "is also the input --data",
    )
    assert snapshot(data) == before
    png = tmp_path / "old.png"
    png.write_bytes(b"an earlier picture")
    refused(
        capsys,
        call(viz_main, ["--data", str(data), "--pair", "0", "--out", str(png)]),
        str(png),
        "--overwrite",
    )
    assert png.read_bytes() == b"an earlier picture"


@pytest.mark.parametrize(
    "case, message",
    [
        ("no-logits", "missing key 'logits'"),
        ("not-npz", "not an .npz file"),
        ("npy", "a single .npy array"),
        ("pose-error-array", "pose_error_deg: expected one number"),
        ("logits-2d", "logits: expected finite numbers of shape (N,)"),
    ],
)
def test_visualization_refuses_bad_predictions(tmp_path, capsys, case, message):
    data = write_pairs(tmp_path / "v.hdf5")
    preds = tmp_path / "preds.npz"
    logits = np.ones(60)
    if case == "no-logits":
        np.savez(preds, scores=logits)
    elif case == "not-npz":
        preds.write_text("logits: 1 2 3")
    elif case == "npy":
        np.save(tmp_path / "preds.npy", logits)
        (tmp_path / "preds.npy").rename(preds)
    elif case == "pose-error-array":
        np.savez(preds, logits=logits, pose_error_deg=np.ones(3))
    else:
        np.savez(preds, logits=logits.reshape(6, 10))
    code = call(
        viz_main,
        [
            "--data",
            str(data),
            "--pair",
            "0",
            "--out",
            str(tmp_path / "p.png"),
            "--predictions",
            str(preds),
        ],
    )
    refused(capsys, code, "corrnet viz: error:", str(preds), message)
    assert not (tmp_path / "p.png").exists()


# ------------------------------------------------- corrnet prepare and corrnet eval on raw folders


def _texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    noise = rng.uniform(0, 255, (size[1] // 8, size[0] // 8, 3)).astype(np.uint8)
    return cv2.GaussianBlur(cv2.resize(noise, size, interpolation=cv2.INTER_CUBIC), (0, 0), 1.0)


def _calibration(
    path: Path, f: float = 300.0, T=(0.0, 0.0, 0.0), R=None, drop: str | None = None
) -> None:
    values = {
        "K": np.array([[f, 0, 0], [0, f, 0], [0, 0, 1.0]]),
        "R": np.eye(3) if R is None else R,
        "T": np.asarray(T, float).reshape(3, 1),
        "imsize": np.array([[240.0, 180.0]]),
    }
    with h5py.File(path, "w") as h:
        for key, value in values.items():
            if key != drop:
                h[key] = value


@pytest.fixture
def raw(tmp_path) -> Path:
    """A raw folder in OANet's layout: one sequence ``seq`` of 3 textured 240x180 images
    (shifted crops of one texture), calibrations with distinct centres, pairs 0-1 and 1-2."""
    root = tmp_path / "raw" / "seq" / "test"
    (root / "images").mkdir(parents=True)
    (root / "calibration").mkdir()
    texture = _texture(np.random.default_rng(0), (300, 200))
    for k in range(3):
        cv2.imwrite(str(root / "images" / f"{k}.png"), texture[10:190, 10 + 20 * k : 250 + 20 * k])
        _calibration(root / "calibration" / f"calibration_{k}.h5", T=(-0.1 * k, 0.0, 0.0))
    (root / "images.txt").write_text("".join(f"images/{k}.png\n" for k in range(3)))
    (root / "calibration.txt").write_text(
        "".join(f"calibration/calibration_{k}.h5\n" for k in range(3))
    )
    (root / "pairs.txt").write_text("0 1\n1 2\n")
    return tmp_path / "raw"


def test_prepare_refuses_an_output_made_from_other_inputs(raw, tmp_path, capsys):
    out = tmp_path / "dev.hdf5"
    assert call(prepare_main, ["--raw", str(raw), "--out", str(out), "--workers", "1"]) == 0
    assert len(OANetPairs(out)) == 2
    capsys.readouterr()
    before = snapshot(out)
    assert (
        call(prepare_main, ["--raw", str(raw), "--out", str(out), "--workers", "1"]) == 0
    )  # same inputs: kept
    assert capsys.readouterr().out.strip() == f"{out}: 2 pairs" and snapshot(out) == before
    code = call(
        prepare_main, ["--raw", str(raw), "--out", str(out), "--workers", "1", "--max-pairs", "1"]
    )
    refused(capsys, code, str(out), "made from other inputs", "--overwrite")
    (raw / "seq/test/pairs.txt").write_text("0 2\n")
    refused(
        capsys,
        call(prepare_main, ["--raw", str(raw), "--out", str(out), "--workers", "1"]),
        "other inputs",
    )
    assert snapshot(out) == before
    assert (
        call(prepare_main, ["--raw", str(raw), "--out", str(out), "--workers", "1", "--overwrite"])
        == 0
    )
    assert OANetPairs(out)[0]["image2"].endswith("images/2.png")
    capsys.readouterr()
    text = tmp_path / "notes.hdf5"
    text.write_text("my notes")
    refused(
        capsys,
        call(prepare_main, ["--raw", str(raw), "--out", str(text)]),
        str(text),
        "not an HDF5 file",
    )
    assert text.read_text() == "my notes"


def test_prepare_removes_temporaries_of_a_killed_run(raw, tmp_path):
    out = tmp_path / "dev.hdf5"
    code = (
        "import os, sys\nimport corrnet.datasets.prepare as p\n"
        "from corrnet.atomic import atomic_path\n"
        "pairs = p.read_sequence(p.Path(sys.argv[1]))\n"
        "cache = p.cache_dir_for(p.Path(sys.argv[2])) / 'pairs' / 'x.npz'\n"
        "with atomic_path(cache, suffix='.tmp.npz'):\n"
        "    with atomic_path(sys.argv[2]) as tmp:\n"
        "        tmp.write_text('half')\n        os._exit(9)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", code, str(raw / "seq"), str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert killed.returncode == 9
    cache = prep.cache_dir_for(out) / "pairs"
    assert any(p.name.startswith(".dev.hdf5.tmp") for p in tmp_path.iterdir()) and any(
        cache.iterdir()
    )
    assert (
        call(prepare_main, ["--raw", str(raw), "--out", str(out), "--workers", "1", "--keep-cache"])
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.hdf5", "dev.hdf5.partial", "raw"]
    assert not any(p.name.startswith(".") for p in cache.iterdir())


def _json_entry(**change) -> dict:
    entry = {
        "image1": "a.png",
        "image2": "b.png",
        "K1": [[300, 0, 120], [0, 300, 90], [0, 0, 1]],
        "K2": [[300, 0, 120], [0, 300, 90], [0, 0, 1]],
        "R": np.eye(3).tolist(),
        "t": [1, 0, 0],
    }
    return entry | change


def _prepare_case(case: str, raw: Path, tmp: Path) -> tuple[list[str], str]:
    """Break the raw folder or write a pairs file for ``case``: (arguments, expected message)."""
    test = raw / "seq" / "test"
    calib = test / "calibration"
    pairs_json = ["--pairs-file", str(tmp / "p.json")]
    if case == "missing-raw":
        return ["--raw", str(tmp / "nowhere")], "nowhere: no such folder"
    if case == "unknown-seq":
        return ["--raw", str(raw), "--seq", "nope"], "nope: expected a sequence folder"
    if case == "max-pairs":
        return ["--raw", str(raw), "--max-pairs", "-1"], "--max-pairs: expected a positive number"
    if case == "unreadable-image":
        (test / "images/1.png").write_bytes(b"\x89PNG garbage")
        return ["--raw", str(raw)], "images/1.png: cannot read as an image"
    if case == "missing-image":
        (test / "images/2.png").unlink()
        return ["--raw", str(raw)], "images/2.png: no such image file (pair seq/1-2)"
    if case == "pairs-line":
        (test / "pairs.txt").write_text("0 1\n1,2\n")
        return ["--raw", str(raw)], "pairs.txt: line 2: expected 'i j', got '1,2'"
    calibrations = {
        "calibration-garbage": (1, None, "calibration_1.h5: not a readable calibration file"),
        "calibration-without-R": (0, {"drop": "R"}, "calibration_0.h5: missing key(s) ['R']"),
        "calibration-zero-focal": (
            2,
            {"f": 0.0},
            "calibration_2.h5: K: expected positive focal lengths",
        ),
        "calibration-nan-focal": (2, {"f": np.nan}, "calibration_2.h5: K: expected finite values"),
        "calibration-scaled-R": (
            1,
            {"R": 2 * np.eye(3)},
            "calibration_1.h5: R: expected a rotation",
        ),
    }
    if case in calibrations:
        k, change, message = calibrations[case]
        if change is None:
            (calib / f"calibration_{k}.h5").write_text("K = 1")
        else:
            _calibration(calib / f"calibration_{k}.h5", **change)
        return ["--raw", str(raw)], message
    entries = {
        "json-R-2I": (
            [_json_entry(R=(2 * np.eye(3)).tolist())],
            "p.json: pair 0: R: expected a rotation",
        ),
        "json-singular-K": (
            [_json_entry(), _json_entry(K2=np.zeros((3, 3)).tolist())],
            "p.json: pair 1: K2: expected positive focal lengths",
        ),
        "json-nan-K": (
            [_json_entry(K1=[[float("nan"), 0, 1], [0, 1, 1], [0, 0, 1]])],
            "p.json: pair 0: K1: expected finite numbers",
        ),
        "json-image-number": (
            [_json_entry(image1=3)],
            "p.json: pair 0: image1: expected a path string",
        ),
    }
    if case in entries:
        (tmp / "p.json").write_text(json.dumps(entries[case][0]))
        return pairs_json, entries[case][1]
    if case == "json-malformed":
        (tmp / "p.json").write_text("[{")
        return pairs_json, "p.json: cannot read a JSON pairs file"
    assert case == "out-is-input"
    (tmp / "p.json").write_text("[]")
    return pairs_json + ["--out", str(tmp / "p.json")], "is also the input --pairs-file"


PREPARE_CASES = [
    "missing-raw",
    "unknown-seq",
    "max-pairs",
    "unreadable-image",
    "missing-image",
    "pairs-line",
    "calibration-garbage",
    "calibration-without-R",
    "calibration-zero-focal",
    "calibration-nan-focal",
    "calibration-scaled-R",
    "json-R-2I",
    "json-singular-K",
    "json-nan-K",
    "json-image-number",
    "json-malformed",
    "out-is-input",
]


@pytest.mark.parametrize("case", PREPARE_CASES)
def test_prepare_bad_input_is_one_line(raw, tmp_path, capsys, case):
    args, message = _prepare_case(case, raw, tmp_path)
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out.hdf5")]
    inputs = {p: snapshot(p) for p in tmp_path.rglob("*") if p.is_file()}
    refused(
        capsys, call(prepare_main, args + ["--workers", "1"]), "corrnet prepare: error:", message
    )
    assert {p: snapshot(p) for p in inputs} == inputs
    assert not (tmp_path / "out.hdf5").exists()


def test_eval_raw_folder_cache_follows_the_pairs_and_calibration(raw, tmp_path, capsys):
    def run(out: str) -> dict:
        code = call(
            eval_main,
            [
                "--data",
                str(raw),
                "--cache",
                str(tmp_path / "cache"),
                "--methods",
                "ransac",
                "--workers",
                "1",
                "--quiet",
                "--out",
                str(tmp_path / out),
            ],
        )
        assert code == 0, capsys.readouterr().err
        return json.loads((tmp_path / out / "report.json").read_text())

    assert run("a")["pairs"] == 2
    (raw / "seq/test/pairs.txt").write_text("0 1\n1 2\n0 2\n")
    assert run("b")["pairs"] == 3
    assert len(list((tmp_path / "cache").glob("*.hdf5"))) == 2
    _calibration(raw / "seq/test/calibration/calibration_1.h5", drop="R")
    capsys.readouterr()
    code = call(
        eval_main,
        [
            "--data",
            str(raw),
            "--cache",
            str(tmp_path / "cache"),
            "--methods",
            "ransac",
            "--quiet",
            "--out",
            str(tmp_path / "c"),
        ],
    )
    refused(capsys, code, "corrnet eval: error:", "calibration_1.h5: missing key(s) ['R']")


def test_eval_raw_folder_passes_num_features_to_its_preparation(raw, tmp_path, capsys):
    """--num-features K prepares the raw folder with K keypoints per image into a cache file of
    its own; with an HDF5 --data (keypoints already extracted) it is refused."""
    cache = tmp_path / "cache"

    def run(out: str, *extra: str) -> int:
        base = ["--cache", str(cache), "--methods", "ransac", "--workers", "1", "--quiet"]
        return call(eval_main, ["--data", str(raw), *base, "--out", str(tmp_path / out), *extra])

    assert run("a", "--num-features", "100") == 0, capsys.readouterr().err
    (small,) = cache.glob("*.hdf5")
    with h5py.File(small, "r") as f:
        assert f.attrs[prep.NUM_FEATURES_ATTR] == 100
        assert f.attrs[prep.PROTOCOL_ATTR] == prep.protocol(100)
    assert max(len(s["xs"]) for s in OANetPairs(small)) <= 100
    assert run("b") == 0, capsys.readouterr().err
    (default,) = set(cache.glob("*.hdf5")) - {small}
    with h5py.File(default, "r") as f:
        assert f.attrs[prep.NUM_FEATURES_ATTR] == prep.NUM_FEATURES
    capsys.readouterr()
    code = call(
        eval_main,
        ["--data", str(small), "--methods", "ransac", "--out", str(tmp_path / "c")]
        + ["--num-features", "100"],
    )
    refused(capsys, code, "corrnet eval: error:", "--num-features: only with a raw folder")
