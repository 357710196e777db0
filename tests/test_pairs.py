"""corrnet.pairs: many pairs in one run, resumed after a kill, split over torchrun processes.

Four views of two textured planes are rendered with OpenCV (known cameras), so nothing here
needs data.  The reference run is in this process; the others are subprocesses.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import corrnet.match as cm
import corrnet.pairs as cp
from corrnet.cli import main as corrnet
from corrnet.geometry import pose_errors
from corrnet.verifier import Verifier
from tests.test_match import K, _error, _render, wall_and_panel

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [
    ("view0.png", "view1.png"),
    ("view0.png", "view2.png"),
    ("view1.png", "view2.png"),
    ("view2.png", "view3.png"),
    ("view0.png", "view3.png"),
    ("view1.png", "view3.png"),
    ("view3.png", "view1.png"),
]


def _camera(i: int) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera R (3, 3), t (3,) of view i: a turn about y and a sideways step."""
    a = np.radians(3.0 * i)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return R, np.array([-0.4 * i, 0.05 * i, 0.1 * i])


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict:
    """The images, a pairs file (with a comment and a blank line) and an intrinsics file."""
    rng = np.random.default_rng(0)
    planes = wall_and_panel(rng)
    root = tmp_path_factory.mktemp("pairs")
    images = root / "images"
    images.mkdir()
    import cv2

    for i in range(4):
        cv2.imwrite(str(images / f"view{i}.png"), _render(planes, *_camera(i)))
    pairs = root / "pairs.txt"
    lines = [
        "# hloc pairs",
        *(f"{a} {b}" for a, b in PAIRS[:3]),
        "",
        *(f"{a} {b}" for a, b in PAIRS[3:]),
    ]
    pairs.write_text("\n".join(lines) + "\n")
    intrinsics = root / "intrinsics.txt"
    intrinsics.write_text("".join(f"view{i}.png 500 500 319.5 239.5\n" for i in range(4)))
    return {"root": root, "images": images, "pairs": pairs, "intrinsics": intrinsics}


def _argv(scene: dict, out: Path, *extra: str) -> list[str]:
    return [
        "--pairs",
        str(scene["pairs"]),
        "--images",
        str(scene["images"]),
        "--out",
        str(out),
        "--intrinsics",
        str(scene["intrinsics"]),
        "--batch-size",
        "2",
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(scene) -> Path:
    """An uninterrupted run in this process (one worker)."""
    out = scene["root"] / "reference"
    assert cp.main(_argv(scene, out)) == 0
    return out


def _dump(path: Path) -> dict:
    """Every dataset's values and every attribute of an HDF5 file, by path."""
    with h5py.File(path, "r") as f:
        items = {"/": dict(f.attrs)}
        f.visititems(
            lambda name, obj: items.__setitem__(
                name, (obj[()] if isinstance(obj, h5py.Dataset) else None, dict(obj.attrs))
            )
        )
    return items


def _same_outputs(a: Path, b: Path) -> None:
    """poses.csv byte for byte; features.h5 and matches.h5 the same datasets, values, attributes."""
    assert (a / "poses.csv").read_bytes() == (b / "poses.csv").read_bytes()
    for name in ("features.h5", "matches.h5"):
        da, db = _dump(a / name), _dump(b / name)
        assert da.keys() == db.keys(), name
        for key in da:
            if key == "/":
                assert da[key] == db[key]
                continue
            (va, aa), (vb, ab) = da[key], db[key]
            np.testing.assert_array_equal(va, vb, err_msg=f"{name}: {key}")
            assert aa.keys() == ab.keys()
            for attr in aa:
                np.testing.assert_array_equal(aa[attr], ab[attr], err_msg=f"{name}: {key}.{attr}")
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


def test_poses_and_files(scene, reference):
    """Each pair's pose is within 1 degree of the cameras' relative pose; the files agree."""
    rows = list(csv.reader((reference / "poses.csv").open()))
    assert tuple(rows[0]) == cp.POSE_COLUMNS
    assert [tuple(r[:2]) for r in rows[1:]] == PAIRS
    assert sorted(p.name for p in reference.iterdir()) == sorted([*cp.RESULT_FILES, cp.INPUTS_FILE])
    with (
        h5py.File(reference / "matches.h5", "r") as f,
        h5py.File(reference / "features.h5", "r") as feats,
    ):
        for row in rows[1:]:
            (R1, t1), (R2, t2) = (_camera(int(n[4])) for n in row[:2])
            R_gt, t_gt = R2 @ R1.T, t2 - R2 @ R1.T @ t1
            R, t = np.array(row[2:11], float).reshape(3, 3), np.array(row[11:14], float)
            err_R, err_t = pose_errors(*(torch.from_numpy(v) for v in (R, t, R_gt, t_gt)))
            assert max(float(err_R), float(err_t)) < 1.0, row[:2]
            g = f[cp.pair_group(*row[:2])]
            np.testing.assert_array_equal(g["R"][()], R)
            kept, inliers = g["kept"][()], g["inliers"][()]
            assert not (inliers & ~kept).any()
            assert int(row[15]) == inliers.sum() == g.attrs["num_inliers"] and row[16] == "1"
            assert int(row[14]) == len(g["matches"]) == len(kept) == len(g["scores"])
            # E = [t]x R (float64 closed form)
            tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
            E = g["E"][()]
            assert np.allclose(E / np.linalg.norm(E), tx @ R / np.linalg.norm(tx @ R), atol=1e-9)
            # matches are the features' keypoints at keypoint_ids
            ids = g["keypoint_ids"][()]
            for side, name in enumerate(row[:2]):
                kp = feats[cp.encode_name(name)]["keypoints"][()]
                np.testing.assert_array_equal(
                    g["matches"][:, 2 * side : 2 * side + 2], kp[ids[:, side]]
                )
        np.testing.assert_array_equal(feats["view0.png"]["K"][()], K)
        assert feats["view0.png"].attrs["intrinsics"] == "given"


def test_batch_of_one_equals_corrnet_match(scene, tmp_path):
    """With one pair per batch the pipeline is exactly corrnet.match's."""
    out = tmp_path / "out"
    assert cp.main(_argv(scene, out)[:-3] + ["--batch-size", "1", "--quiet"]) == 0
    with h5py.File(out / "matches.h5", "r") as f:
        for a, b in PAIRS[:2]:
            ref = cm.match_images(scene["images"] / a, scene["images"] / b, K, K)
            g = f[cp.pair_group(a, b)]
            np.testing.assert_array_equal(g["R"][()], ref.R)
            np.testing.assert_array_equal(g["inliers"][()], ref.inliers)
            np.testing.assert_array_equal(g["kept"][()], ref.kept)
            np.testing.assert_array_equal(g["matches"][()], np.hstack([ref.uv1, ref.uv2]))


def test_corrnet_match_pairs_equals_the_module(scene, reference, tmp_path, capsys):
    """``corrnet match --pairs ...`` is the pairs mode: the files of ``python -m
    corrnet.pairs``, and its error lines carry the verb's name."""
    out = tmp_path / "out"
    assert corrnet(["match", *_argv(scene, out)]) == 0
    assert f"{len(PAIRS)} pairs ({len(PAIRS)} verified now" in capsys.readouterr().out
    _same_outputs(reference, out)
    bad = tmp_path / "pairs.txt"
    bad.write_text("view0.png\n")
    argv = ["match", "--pairs", str(bad), "--images", str(scene["images"]), "--out", str(out)]
    _error(argv, capsys, "pairs.txt: line 1: expected two image names", "corrnet match", corrnet)


def _command(scene: dict, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "corrnet.pairs", *_argv(scene, out, *extra)]


def test_resume_after_sigkill(scene, reference, tmp_path):
    """SIGKILL once chunks are done, then the same command: the uninterrupted run's files."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _command(scene, out, "--workers", "2"), cwd=ROOT, stderr=subprocess.DEVNULL
    )
    chunks = out / cp.WORK_DIR / "chunks"
    deadline = time.monotonic() + 300
    while (
        len(list(chunks.glob("chunk-*.h5"))) < 2
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "poses.csv").exists(), "the run finished before it was killed"
    done = sorted(p.name for p in chunks.glob("chunk-*.h5"))
    assert 2 <= len(done) < 4
    # a half-written chunk of a dead writer, as a kill during a write leaves it
    (chunks / ".chunk-000003.h5.tmp999999-abcdefgh.tmp.h5").write_bytes(b"\x89HDF\r\n half")
    result = subprocess.run(_command(scene, out), cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"{len(PAIRS) - 2 * len(done)} verified now" in result.stdout
    _same_outputs(reference, out)
    # a third run finds the result complete
    again = subprocess.run(_command(scene, out), cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_torchrun_two_processes(scene, reference, tmp_path):
    """torchrun with 2 CPU processes (gloo) writes the single process's files."""
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "corrnet.pairs",
        *_argv(scene, out),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{len(PAIRS)} pairs ({len(PAIRS)} verified now" in result.stdout
    _same_outputs(reference, out)


def test_other_inputs_refused(scene, reference, tmp_path, capsys):
    """An OUT made from other intrinsics is refused with one line, kept as it was, and
    replaced with --overwrite."""
    before = (reference / "poses.csv").read_bytes()
    argv = _argv(scene, reference)
    other = scene["root"] / "other.txt"
    other.write_text("".join(f"view{i}.png 520 520 319.5 239.5\n" for i in range(4)))
    argv[argv.index("--intrinsics") + 1] = str(other)
    _error(argv, capsys, "holds a run of other inputs", "python -m corrnet.pairs", cp.main)
    assert (reference / "poses.csv").read_bytes() == before
    copy = tmp_path / "copy"
    assert cp.main(_argv(scene, copy)) == 0
    argv[argv.index("--out") + 1] = str(copy)
    assert cp.main([*argv, "--overwrite"]) == 0
    assert (copy / "poses.csv").read_bytes() != before


def test_other_keypoint_count_is_other_inputs(scene, reference, tmp_path, capsys):
    """The keypoint count is part of the inputs: another --num-features into an existing OUT
    is refused; into a fresh OUT it keeps at most that many keypoints per image."""
    argv = _argv(scene, reference)
    _error(
        [*argv, "--num-features", "300"],
        capsys,
        "holds a run of other inputs",
        "python -m corrnet.pairs",
        cp.main,
    )
    out = tmp_path / "few"
    assert cp.main([*_argv(scene, out), "--num-features", "300", "--quiet"]) == 0
    with h5py.File(out / "features.h5", "r") as f:
        counts = [len(f[name]["keypoints"]) for name in f]
    assert counts and max(counts) <= 300


@pytest.mark.parametrize(
    "pairs_text, intrinsics_text, expected",
    [
        (
            "view0.png view1.png\nview0.png\n",
            None,
            "pairs.txt: line 2: expected two image names, got 1",
        ),
        ("# c\nview0.png missing.png\n", None, "pairs.txt: line 2: "),
        (
            "view0.png view1.png\n",
            "view0.png 500 500 319.5 239.5\n\nview1.png 500 319.5 239.5\n",
            "intrinsics.txt: line 3: expected NAME FX FY CX CY (a name and 4 numbers), got 3 after",
        ),
        (
            "view0.png view1.png\n",
            "view0.png 500 -500 319.5 239.5\n",
            "intrinsics.txt: line 1: expected positive",
        ),
        ("view0.png view1.png\nview0.png view1.png\n", None, "pairs.txt: line 2: the pair"),
    ],
)
def test_bad_input_one_line(scene, tmp_path, capsys, pairs_text, intrinsics_text, expected):
    """Bad pairs or intrinsics lines end with one line naming the file and the line."""
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(pairs_text)
    argv = ["--pairs", str(pairs), "--images", str(scene["images"]), "--out", str(tmp_path / "out")]
    if intrinsics_text is not None:
        (tmp_path / "intrinsics.txt").write_text(intrinsics_text)
        argv += ["--intrinsics", str(tmp_path / "intrinsics.txt")]
    _error(argv, capsys, expected, "python -m corrnet.pairs", cp.main)
    if "missing" in pairs_text:
        _error(argv, capsys, "missing.png: no such image file", "python -m corrnet.pairs", cp.main)
    assert not (tmp_path / "out").exists()


def test_colmap_text_intrinsics(scene, tmp_path):
    """A COLMAP text model gives K with the principal point shifted by -0.5 (COLMAP's pixel
    centres are at +0.5)."""
    (tmp_path / "cameras.txt").write_text(
        "# c\n1 PINHOLE 640 480 500 510 320 240\n2 SIMPLE_PINHOLE 640 480 400 320 240\n"
    )
    (tmp_path / "images.txt").write_text(
        "# i\n1 1 0 0 0 0 0 0 1 view0.png\n\n2 1 0 0 0 0 0 0 2 sub/view1.png\n1.0 2.0 -1\n"
    )
    Ks = cp.read_intrinsics(tmp_path)
    np.testing.assert_array_equal(Ks["view0.png"], [[500, 0, 319.5], [0, 510, 239.5], [0, 0, 1]])
    np.testing.assert_array_equal(
        Ks["sub/view1.png"], [[400, 0, 319.5], [0, 400, 239.5], [0, 0, 1]]
    )


def test_encode_name_round_trip():
    """Group names hold no '/' and decode back to the image name."""
    from urllib.parse import unquote

    for name in ("a/b c.jpg", "100%/x%2F.png", "plain.jpg"):
        assert "/" not in cp.encode_name(name) and unquote(cp.encode_name(name)) == name


def test_verifier_pairs_without_pose():
    """Fewer than 8 matches: with few_matches (as the pairs mode calls it) a result without
    pose and a warning, not an error; without, an error naming the pair."""
    pair = dict(kpts1=np.zeros((3, 2)), kpts2=np.zeros((3, 2)), K1=K, K2=K)
    pair |= dict(ratios=np.zeros(3), mutuals=np.zeros(3, bool))
    verifier = Verifier()
    [r] = verifier.verify_many([pair], few_matches=True)
    assert not r.confident and r.num_inliers == 0 and np.isnan(r.R).all() and r.warnings
    with pytest.raises(ValueError, match=r"^pairs\[0\]: kpts1: expected at least 8 matches"):
        verifier.verify_many([pair])
