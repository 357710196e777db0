"""Nothing lost, nothing hung, nothing silently wrong: hostile inputs at every boundary end with
one line naming the file, key or argument, and never touch what they should not."""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
import yaml

from corrnet import images
from corrnet.atomic import (
    LockedError,
    NotRegularFileError,
    atomic_path,
    check_regular_input,
    exclusive_lock,
    is_temporary,
    remove_stale_temporaries,
    temporary_folder,
)
from corrnet.checkpoint import PRETRAINED, load_model
from corrnet.commands.merge import main as merge_main
from corrnet.commands.prepare import main as prepare_main
from corrnet.commands.synthetic import main as synthetic_main
from corrnet.commands.train import AtomicCheckpointIO, bounded_yaml_load
from corrnet.commands.train import main as train_main
from corrnet.datasets.oanet_hdf5 import (
    INTRINSICS_KEYS,
    MAX_MATCHES,
    SIDE_INFO_KEYS,
    BadPairError,
    OANetPairs,
)
from corrnet.datasets.prepare import cache_dir_for, image_digest, lock_file_for
from corrnet.errors import UserError, one_line
from corrnet.images import MAX_PIXELS_VARIABLE, image_size, read_image
from corrnet.match import (
    DEFAULT_FOCAL_FACTOR,
    EXIF_FOCAL_RANGE_MM,
    ApproximateIntrinsicsWarning,
    approximate_intrinsics,
)
from corrnet.match import main as match_main
from corrnet.models.loss import CorrNetLoss
from corrnet.verifier import as_device
from tests import test_cli_errors
from tests.test_cli_errors import ROOT, _texture, call, eval_main, refused
from tests.test_match import _jpeg_with_exif
from tests.test_train import _args as train_args

raw = test_cli_errors.raw
"""A raw folder in OANet's layout (test_cli_errors' fixture)."""

# ---------------------------------------------------------------- outputs: a regular file or new


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def syn(tmp_path) -> Path:
    out = tmp_path / "syn.hdf5"
    assert synthetic_main(["--out", str(out), "--pairs", "2", "--num-matches", "50"]) == 0
    return out


def test_overwrite_refuses_a_device_a_fifo_a_folder_and_a_dangling_link(tmp_path, fifo, capsys):
    device = tmp_path / "null"
    device.symlink_to("/dev/null")
    (tmp_path / "folder").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "absent")
    for out, kind in [
        (device, "character device"),
        (fifo, "FIFO"),
        (tmp_path / "folder", "folder"),
        (tmp_path / "dangling", "missing file"),
    ]:
        args = ["--out", str(out), "--pairs", "1", "--num-matches", "50", "--overwrite"]
        refused(capsys, call(synthetic_main, args), str(out), kind)
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and device.is_symlink()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_merge_refuses_a_fifo_output(syn, fifo, capsys):
    refused(capsys, call(merge_main, [str(syn), "--out", str(fifo), "--overwrite"]), "FIFO")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_merge_and_the_picture_refuse_a_device_output(syn, tmp_path, capsys):
    from corrnet.commands.viz import main as viz_main

    device = tmp_path / "null"
    device.symlink_to("/dev/null")
    for main, args in [
        (merge_main, [str(syn), "--out", str(device), "--overwrite"]),
        (viz_main, ["--data", str(syn), "--pair", "0", "--out", str(device), "--overwrite"]),
    ]:
        refused(capsys, call(main, args), f"{device}: is a character device")
    assert device.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_atomic_path_checks_again_before_the_rename(tmp_path):
    out = tmp_path / "out.bin"
    with pytest.raises(NotRegularFileError, match="FIFO"):
        with atomic_path(out) as tmp:
            tmp.write_text("new")
            os.mkfifo(out)  # appeared while writing
    assert stat.S_ISFIFO(out.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_inputs_must_be_regular_files(tmp_path, fifo):
    with pytest.raises(NotRegularFileError, match="FIFO"):
        check_regular_input(fifo, "image")
    with pytest.raises(FileNotFoundError, match="no such image"):
        check_regular_input(tmp_path / "absent.png", "image")


# ---------------------------------------------------------------- temporaries: only our own


def test_the_stale_sweep_keeps_user_files_that_look_like_temporaries(tmp_path):
    user = [
        ".backup.tmp4000000-20261204.tar",
        ".thesis.tmp99999-draftv02.docx",
        ".x.hdf5.tmp99999-corrnet-0123456789abcdef.tmp",  # our pattern, a wrong digest
    ]
    for name in user:
        (tmp_path / name).write_text("keep")
    assert (
        synthetic_main(["--out", str(tmp_path / "x.hdf5"), "--pairs", "1", "--num-matches", "50"])
        == 0
    )
    assert remove_stale_temporaries(tmp_path) == []
    assert all((tmp_path / name).read_text() == "keep" for name in user)


def test_temporary_names_are_verifiable(tmp_path):
    with atomic_path(tmp_path / "a.npz", suffix=".tmp.npz") as tmp:
        assert is_temporary(tmp.name) and tmp.name.endswith(".tmp.npz")
        forged = tmp.name.replace(tmp.name[-20], "0" if tmp.name[-20] != "0" else "1", 1)
        assert not is_temporary(forged)


# ---------------------------------------------------------------- checkpoints and run folders


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "best-8.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(4)}, path)

    def disk_full(obj, f) -> None:
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError) as err:  # torch's message names no file; the error does
        io.save_checkpoint({"step": torch.tensor(8)}, path)
    assert err.value.errno == errno.ENOSPC
    assert f"{path}: No space left on device while writing it" in str(err.value)
    assert torch.load(path, weights_only=True)["step"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["best-8.ckpt"]


def test_train_writes_checkpoints_atomically(tmp_path):
    from corrnet.commands.train import CorrNetCLI
    from corrnet.training.datamodule import CorrNetDataModule
    from corrnet.training.module import CorrNetModule

    cli = CorrNetCLI(CorrNetModule, CorrNetDataModule, run=False, args=train_args(tmp_path, 1))
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.parametrize("logger", ["csv version 0", "none"])
def test_a_new_run_never_replaces_an_earlier_runs_logs(tmp_path, capsys, logger):
    args = train_args(tmp_path, 1)
    if logger == "none":
        args += ["--trainer.logger", "false"]
        earlier = tmp_path / "config.yaml"
    else:
        args += ["--trainer.logger.init_args.version", "0"]
        earlier = tmp_path / "lightning_logs/version_0/metrics.csv"
    earlier.parent.mkdir(parents=True, exist_ok=True)
    earlier.write_text("earlier run")
    refused(capsys, train_main(args), str(earlier.parent), earlier.name)
    assert earlier.read_text() == "earlier run"
    assert not (tmp_path / "ckpt").exists()


# ---------------------------------------------------------------- HDF5: declared, then read


def _edit(path: Path, edit) -> Path:
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _replace(key: str, value) -> object:
    def edit(f: h5py.File) -> None:
        del f[key]
        if value is None:
            return
        if isinstance(value, str):
            f.create_group(key)
        else:
            f.create_dataset(key, data=value)

    return edit


BAD_DATASETS = {
    "xs of strings": (_replace("xs/1", np.array(["a"] * 4, dtype=object).astype("S")), "dtype"),
    "a group for a dataset": (_replace("ys/1", "group"), "ys/1: expected a dataset, got a group"),
    "2e9 declared matches": (
        lambda f: (
            f["xs"].__delitem__("1"),
            f["xs"].create_dataset("1", shape=(1, 2 * 10**9, 4), dtype="f4", chunks=(1, 4096, 4)),
        ),
        "declares shape (1, 2000000000, 4)",
    ),
    "ratio 1.5": (_replace("ratios/1", np.full(50, 1.5, np.float32)), "Lowe ratios in [0, 1]"),
    "mutual 0.5": (_replace("mutuals/1", np.full(50, 0.5, np.float32)), "flags 0 or 1, got 0.5"),
    "negative ys": (_replace("ys/1", -np.ones((50, 1), np.float32)), "epipolar distances >= 0"),
    "focal 1e30": (_replace("f1s/1", np.full((1, 2), 1e30, np.float32)), "focal lengths <= 1e+06"),
    "principal point 1e30": (_replace("cx2s/1", np.full(1, 1e30, np.float32)), "cx2s: expected"),
    "ratios/1 missing": (lambda f: f["ratios"].__delitem__("1"), "ratios/1: missing dataset"),
}


@pytest.mark.parametrize("case", list(BAD_DATASETS))
def test_bad_datasets_are_one_line_errors_naming_file_pair_and_key(syn, tmp_path, case):
    edit, message = BAD_DATASETS[case]
    path = _edit(Path(shutil.copy(syn, tmp_path / "bad.hdf5")), edit)
    with pytest.raises(BadPairError) as err:
        OANetPairs(path)[1]
    text = str(err.value)
    assert text.startswith(f"{path}: pair 1: ") and message in text and "\n" not in text, text
    assert path.stat().st_size < 10**6  # the 2e9 matches are only declared


def test_a_group_that_should_hold_pairs_is_refused_when_opened(syn, tmp_path):
    path = _edit(Path(shutil.copy(syn, tmp_path / "bad.hdf5")), _replace("ratios", [1.0]))
    with pytest.raises(BadPairError, match="ratios: expected a group of per-pair datasets"):
        OANetPairs(path)


def test_synthetic_refuses_billions_of_matches(tmp_path, capsys):
    args = ["--out", str(tmp_path / "x.hdf5"), "--pairs", "1", "--num-matches", "2000000000"]
    refused(capsys, call(synthetic_main, args), "--num-matches", str(MAX_MATCHES))


# ---------------------------------------------------------------- merge keeps absence absent


def _without(syn: Path, path: Path, keys: tuple[str, ...]) -> Path:
    return _edit(Path(shutil.copy(syn, path)), lambda f: [f.__delitem__(k) for k in keys])


def test_merge_keeps_absent_side_information_absent(syn, tmp_path, capsys):
    bare = _without(syn, tmp_path / "bare.hdf5", SIDE_INFO_KEYS + INTRINSICS_KEYS)
    out = tmp_path / "merged.hdf5"
    assert merge_main([str(bare), str(bare), "--out", str(out)]) == 0
    for data in (bare, out):  # eval refuses the merged file as it refuses its input
        code = call(eval_main, ["--data", str(data), "--out", str(tmp_path / "report")])
        refused(capsys, code, f"{data}: missing key(s)", "ratios")
    merged = OANetPairs(out)
    assert len(merged) == 4 and merged.lacks(SIDE_INFO_KEYS + INTRINSICS_KEYS) == list(
        SIDE_INFO_KEYS + INTRINSICS_KEYS
    )
    with h5py.File(bare) as a, h5py.File(out) as b:  # copied as stored
        for key in ("xs", "ys", "Rs", "ts"):
            assert np.array_equal(a[key]["1"][()], b[key]["3"][()]), key


def test_merge_refuses_files_with_different_groups(syn, tmp_path, capsys):
    bare = _without(syn, tmp_path / "bare.hdf5", SIDE_INFO_KEYS)
    out = tmp_path / "merged.hdf5"
    refused(capsys, call(merge_main, [str(syn), str(bare), "--out", str(out)]), "bare.hdf5")
    assert not out.exists()


def test_merge_names_a_pair_missing_from_a_group(syn, tmp_path, capsys):
    holed = _edit(Path(shutil.copy(syn, tmp_path / "holed.hdf5")), _replace("ratios/1", None))
    out = tmp_path / "merged.hdf5"
    code = call(merge_main, [str(syn), str(holed), "--out", str(out)])
    refused(capsys, code, "holed.hdf5: pair 1: ratios/1: missing dataset")
    assert not out.exists()


# ---------------------------------------------------------------- checkpoints: validated once


def _exported(tmp_path: Path, edit) -> Path:
    ckpt = torch.load(PRETRAINED, map_location="cpu", weights_only=True)
    edit(ckpt)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    return path


def _first_weight(ckpt: dict) -> str:
    return next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())


BAD_WEIGHTS = {
    "NaN weight": (
        lambda c: c["state_dict"][_first_weight(c)].view(-1).__setitem__(0, np.nan),
        "nan",
    ),
    "1e30 weight": (
        lambda c: c["state_dict"][_first_weight(c)].view(-1).__setitem__(0, 1e30),
        "1e+30",
    ),
    "state_dict a list": (lambda c: c.update(state_dict=[1, 2]), "got list"),
    "an int for a tensor": (lambda c: c["state_dict"].update({_first_weight(c): 3}), "got int"),
    "width 64.0": (lambda c: c["net"].update(width=64.0), "width: expected int, got 64.0"),
    "side_info 1": (lambda c: c["net"].update(side_info=1), "side_info: expected bool"),
    "side_info [1]": (lambda c: c["net"].update(side_info=[1]), "side_info: expected str items"),
}


@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_bad_weights_are_one_line_errors(tmp_path, case):
    edit, message = BAD_WEIGHTS[case]
    path = _exported(tmp_path, edit)
    with pytest.raises(ValueError) as err:
        load_model(path)
    text = str(err.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text, text


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    assert train_main(train_args(run, 2)) == 0
    return run / "ckpt" / "last.ckpt"


BAD_TRAINING_STATE = {
    "loops a list": (lambda c: c.update(loops=[]), "loops: expected dict"),
    "progress a string": (
        lambda c: c["loops"]["fit_loop"].update({"epoch_loop.batch_progress": "x"}),
        "loops.fit_loop.epoch_loop.batch_progress: expected a mapping",
    ),
    "negative count": (
        lambda c: c["loops"]["fit_loop"]["epoch_progress"]["current"].update(ready=-1),
        "epoch_progress: current: expected counts >= 0",
    ),
    "callbacks a string": (lambda c: c.update(callbacks="x"), "callbacks: expected dict"),
    "a callback's state a list": (
        lambda c: c["callbacks"].update({next(iter(c["callbacks"])): [1]}),
        "expected a mapping",
    ),
    "global_step a float": (lambda c: c.update(global_step=2.5), "global_step: expected int"),
    "NaN weight": (
        lambda c: c["state_dict"][_first_weight(c)].view(-1).__setitem__(0, np.nan),
        "nan",
    ),
    "1e30 weight": (
        lambda c: c["state_dict"][_first_weight(c)].view(-1).__setitem__(0, 1e30),
        "1e+30",
    ),
    "NaN optimiser moment": (
        lambda c: (
            next(iter(c["optimizer_states"][0]["state"].values()))["exp_avg"]
            .view(-1)
            .__setitem__(0, np.nan)
        ),
        "optimizer_states[0]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TRAINING_STATE))
def test_mangled_training_checkpoints_are_refused_before_resuming(
    training_checkpoint, tmp_path, capsys, case
):
    edit, message = BAD_TRAINING_STATE[case]
    ckpt = torch.load(training_checkpoint, map_location="cpu", weights_only=True)
    edit(ckpt)
    path = tmp_path / "mangled.ckpt"
    torch.save(ckpt, path)
    run = tmp_path / "run"
    refused(capsys, train_main(train_args(run, 4) + ["--ckpt_path", str(path)]), str(path), message)
    assert not (run / "ckpt").exists()


# ---------------------------------------------------------------- configs: bounded expansion

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)


def test_a_billion_laughs_config_is_refused_before_it_expands(tmp_path, capsys):
    config = tmp_path / "laughs.yaml"
    config.write_text(LAUGHS)
    with pytest.raises(ValueError, match="expands to more than 100000 nodes"):
        bounded_yaml_load(LAUGHS)
    args = train_args(tmp_path, 1) + ["--config", str(config)]
    refused(capsys, train_main(args), "YAML config: expands to more than")


def test_a_few_aliases_still_load():
    text = "model:\n  lr: &lr 2.0e-3\n  other: [*lr, *lr]\n"
    assert bounded_yaml_load(text) == yaml.safe_load(text)


# ---------------------------------------------------------------- reads: regular files only


def test_prepare_never_reads_a_fifo_or_a_device_as_an_image(tmp_path, fifo):
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    for image, kind in [(fifo, "FIFO"), (zero, "character device")]:
        with pytest.raises(NotRegularFileError, match=f"{image}: is a {kind}; expected a regular"):
            image_digest(image)


# ---------------------------------------------------------------- signals: one line, cleaned up

SLOW_COMMAND = """
import multiprocessing, os, sys, tempfile, time
from pathlib import Path
from corrnet.errors import run_command, worker_signals

def init(ready):
    worker_signals()
    ready.put(os.getpid())

def body():
    with tempfile.TemporaryDirectory(prefix="corrnet-viz-", dir=sys.argv[1]) as tmp:
        ctx = multiprocessing.get_context("fork")
        ready = ctx.SimpleQueue()
        with ctx.Pool(2, initializer=init, initargs=(ready,)) as pool:
            pool.map_async(time.sleep, [60, 60])
            ready.get(), ready.get()  # both workers started
            print(tmp, flush=True)
            time.sleep(60)

sys.exit(run_command("slow", body))
"""


def _default_sigint() -> None:
    """In the child before exec: SIGINT as in a terminal's foreground job (a shell starts
    background jobs, such as a CI runner's, with SIGINT ignored, which corrnet keeps)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    "sig, status, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_ends_a_command_with_one_line_after_its_cleanup(tmp_path, sig, status, word):
    """SIGINT goes to the whole process group, as Ctrl-C sends it, SIGTERM to the command (as
    kill or timeout send it): the pool's workers stay silent and the command reports one line
    after removing its folder."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_COMMAND, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    folder = Path(proc.stdout.readline().strip())
    assert folder.is_dir()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status and err == f"slow: {word}\n", err
    assert not folder.exists()


# ---------------------------------------------------------------- command-line numbers


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e30", "x"])
def test_pixel_thresholds_are_finite_positive_and_bounded(tmp_path, capsys, value):
    args = ["a.png", "b.png", "--out", str(tmp_path / "o"), "--threshold", value]
    refused(capsys, call(match_main, args), "--threshold: expected a positive number of pixels")
    args = ["--data", "synthetic", "--poselib-threshold", value]
    refused(capsys, call(eval_main, args), "--poselib-threshold: expected a positive number")


def test_absurd_intrinsics_and_devices_are_refused(tmp_path, capsys):
    args = ["a.png", "b.png", "--out", str(tmp_path / "o"), "--K1", "1e30", "500", "320", "240"]
    refused(capsys, call(match_main, args), "--K1: expected |values| <= 1e+06 pixels")
    with pytest.raises(ValueError, match="device: expected cpu, cuda or mps, got meta"):
        as_device("meta")


def _prepare(raw: Path, out: Path) -> subprocess.CompletedProcess:
    """data/prepare.py in a subprocess with a timeout: a hang fails the test, never the suite."""
    return subprocess.run(
        [sys.executable, "data/prepare.py", "--raw", str(raw), "--out", str(out), "--workers", "1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("kind", ["FIFO", "character device"])
def test_prepare_refuses_an_image_that_is_not_a_regular_file(raw, tmp_path, kind):
    image = raw / "seq" / "test" / "images" / "1.png"
    image.unlink()
    if kind == "FIFO":
        os.mkfifo(image)
    else:
        image.symlink_to("/dev/zero")
    done = _prepare(raw, tmp_path / "dev.hdf5")
    assert done.returncode == 2 and f"{image}: is a {kind}" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_prepare_refuses_a_fifo_output(raw, fifo):
    done = _prepare(raw, fifo)
    assert done.returncode == 2 and f"{fifo}: is a FIFO" in done.stderr, done.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_checkpoints_and_hdf5_files_are_read_only_from_regular_files(fifo):
    with pytest.raises(NotRegularFileError, match="is a FIFO; expected a regular checkpoint"):
        load_model(fifo)
    with pytest.raises(NotRegularFileError, match="is a FIFO; expected a regular HDF5 file"):
        OANetPairs(fifo)


def test_an_evaluation_in_this_process_keeps_ctrl_c(syn, tmp_path):
    """Only pool workers leave Ctrl-C to their command; --workers 1 runs in the command."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    args = ["--data", str(syn), "--methods", "poselib", "--workers", "1", "--quiet"]
    assert eval_main([*args, "--out", str(tmp_path / "report")]) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# ---------------------------------------------------------------- images: one reader, checked


def _jpeg(path: Path, image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image)
    path.write_bytes(data.tobytes())
    return data.tobytes()


def _sof_offset(data: bytes) -> int:
    """Offset of the baseline SOF0 segment's height field in a JPEG OpenCV wrote."""
    return data.index(b"\xff\xc0") + 5


def test_the_header_size_is_the_decoded_size_also_under_exif_rotation(tmp_path):
    image = np.zeros((60, 80, 3), np.uint8)
    data = _jpeg(tmp_path / "plain.jpg", image)
    tiff = b"II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)
    tiff += struct.pack("<I", 0)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\0\0" + tiff
    (tmp_path / "rotated.jpg").write_bytes(data[:2] + app1 + data[2:])
    cv2.imwrite(str(tmp_path / "plain.png"), image)
    for name in ("plain.jpg", "rotated.jpg", "plain.png"):
        decoded = cv2.imread(str(tmp_path / name))  # OpenCV applies the EXIF orientation
        assert image_size(tmp_path / name) == (decoded.shape[1], decoded.shape[0])
        assert read_image(tmp_path / name).shape == decoded.shape
    assert image_size(tmp_path / "rotated.jpg") == (60, 80)


@pytest.mark.parametrize("kind", ["jpg", "png"])
def test_a_truncated_image_is_refused_naming_the_file(tmp_path, kind):
    image = _texture(np.random.default_rng(1), (320, 240))
    whole = tmp_path / f"whole.{kind}"
    cv2.imwrite(str(whole), image)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    if kind == "jpg":  # OpenCV itself returns the decodable part, grey below the cut
        assert cv2.imread(str(cut)) is not None
    with pytest.raises(UserError, match=f"{cut}: .*(truncated JPEG|without its IEND)"):
        read_image(cut)
    assert read_image(whole).shape == (240, 320, 3)


def test_a_huge_declared_size_is_refused_before_decoding(tmp_path, monkeypatch, capsys):
    data = bytearray(_jpeg(tmp_path / "small.jpg", np.zeros((8, 8, 3), np.uint8)))
    at = _sof_offset(bytes(data))
    data[at : at + 4] = struct.pack(">HH", 20000, 20000)
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(bytes(data))
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((8, 8, 3), np.uint8))
    png = bytearray((tmp_path / "small.png").read_bytes())
    png[16:24] = struct.pack(">II", 20000, 20000)
    (tmp_path / "huge.png").write_bytes(bytes(png))
    decoded = []
    monkeypatch.setattr(images, "_decode", lambda *a: decoded.append(a))
    for path in (huge, tmp_path / "huge.png"):
        with pytest.raises(UserError, match=f"{path}: the header declares 20000 x 20000 pixels"):
            read_image(path)
    assert decoded == []
    monkeypatch.undo()
    args = [str(huge), str(tmp_path / "small.jpg"), "--out", str(tmp_path / "o")]
    refused(capsys, call(match_main, args), str(huge), "20000 x 20000", "100,000,000")
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "63")
    with pytest.raises(UserError, match="8 x 8 pixels, more than the 63 pixels"):
        read_image(tmp_path / "small.jpg")
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "lots")
    with pytest.raises(UserError, match=f"{MAX_PIXELS_VARIABLE}: expected a positive integer"):
        read_image(tmp_path / "small.jpg")


def test_empty_tiny_and_looping_image_files_are_one_line_each(tmp_path, capsys):
    good = tmp_path / "good.jpg"
    _jpeg(good, _texture(np.random.default_rng(2), (320, 240)))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "tiny.jpg").write_bytes(b"\xff")
    (tmp_path / "loop1.jpg").symlink_to(tmp_path / "loop2.jpg")
    (tmp_path / "loop2.jpg").symlink_to(tmp_path / "loop1.jpg")
    for name, needle in [
        ("empty.jpg", "empty file"),
        ("tiny.jpg", "cannot read as an image"),
        ("loop1.jpg", "a loop of symbolic links"),
    ]:
        args = [str(tmp_path / name), str(good), "--out", str(tmp_path / "out")]
        refused(capsys, call(match_main, args), f"{tmp_path / name}: {needle}")
    args = [str(good), str(good), "--out", str(tmp_path / "loop1.jpg")]
    refused(capsys, call(match_main, args), "loop1.jpg: a symbolic link to a missing folder")


@pytest.mark.parametrize("how", ["imsize", "rotated", "truncated"])
def test_prepare_refuses_an_image_that_does_not_match_its_calibration(raw, tmp_path, capsys, how):
    test = raw / "seq" / "test"
    image, calibration = test / "images" / "1.png", test / "calibration" / "calibration_1.h5"
    if how == "imsize":
        with h5py.File(calibration, "r+") as f:
            f["imsize"][...] = [[320.0, 180.0]]
        needles = [f"{image}: decodes to 240 x 180 pixels", str(calibration), "imsize 320 x 180"]
    elif how == "rotated":
        cv2.imwrite(str(image), cv2.rotate(cv2.imread(str(image)), cv2.ROTATE_90_CLOCKWISE))
        needles = [f"{image}: decodes to 180 x 240 pixels", "imsize 240 x 180"]
    else:
        image.write_bytes(image.read_bytes()[:-40])
        needles = [f"{image}: PNG without its IEND chunk"]
    out = tmp_path / "dev.hdf5"
    code = call(prepare_main, ["--raw", str(raw), "--out", str(out), "--workers", "1"])
    refused(capsys, code, *needles)
    assert not out.exists()


@pytest.mark.parametrize("focal", [1, 65535])
def test_an_absurd_exif_focal_length_falls_back_to_the_default_with_a_warning(tmp_path, focal):
    path = tmp_path / "exif.jpg"
    _jpeg_with_exif(path, focal, "<")
    with pytest.warns(ApproximateIntrinsicsWarning, match=f"{path}: EXIF FocalLengthIn35mmFilm "):
        K, source = approximate_intrinsics(path, 640, 480)
    assert source == "default" and K[0, 0] == pytest.approx(DEFAULT_FOCAL_FACTOR * 640)
    low, high = EXIF_FOCAL_RANGE_MM
    assert not low <= focal <= high
    _jpeg_with_exif(path, 50, "<")  # a plausible one is used, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        K, source = approximate_intrinsics(path, 640, 480)
    assert source == "exif" and K[0, 0] == pytest.approx(50 * 800 / np.hypot(36, 24))


# ---------------------------------------------------------------- 3-D frames


def _rgbd_sequence(folder: Path, depth_mm: np.ndarray, focal: float) -> Path:
    for sub in ("depth", "pose"):
        (folder / sub).mkdir(parents=True)
    np.savetxt(folder / "camera-intrinsics.txt", [[focal, 0, 32], [0, focal, 24], [0, 0, 1]])
    for k in range(2):
        cv2.imwrite(str(folder / "depth" / f"frame-{k:06d}.depth.png"), depth_mm)
        pose = np.eye(4)
        pose[0, 3] = 0.05 * k
        np.savetxt(folder / "pose" / f"frame-{k:06d}.pose.txt", pose)
    return folder


@pytest.mark.parametrize("case", ["tiny-focal", "all-zero-depth"])
def test_prepare3d_refuses_absurd_intrinsics_and_empty_depth_frames(tmp_path, capsys, case):
    from corrnet.commands.prepare3d import main as prepare3d_main

    rng = np.random.default_rng(3)
    depth = rng.uniform(1000, 2000, (48, 64)).astype(np.uint16)
    if case == "tiny-focal":
        seq = _rgbd_sequence(tmp_path / "seq", depth, 1e-20)
        needles = ["camera-intrinsics.txt", "expected focal lengths in [1, 1e+06]", "1e-20"]
    else:
        seq = _rgbd_sequence(tmp_path / "seq", np.zeros_like(depth), 50.0)
        needles = ["frame-000000.depth.png: 0 depth readings", "all-zero"]
    out = tmp_path / "p.hdf5"
    code = call(prepare3d_main, ["--rgbd", str(seq), "--out", str(out), "--quiet"])
    refused(capsys, code, *needles)
    assert not out.exists()


# ---------------------------------------------------------------- one prepare run per --out

HOLD_LOCK = """
import sys, time
from pathlib import Path
from corrnet.atomic import exclusive_lock
from corrnet.datasets.prepare import lock_file_for
with exclusive_lock(lock_file_for(Path(sys.argv[1])), "test"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_prepare_into_the_same_out_is_refused_and_leaves_the_cache(raw, tmp_path, capsys):
    out = tmp_path / "dev.hdf5"
    cache = cache_dir_for(out)
    (cache / "features").mkdir(parents=True)
    kept = cache / "features" / "0123456789abcdef0123.npz"
    np.savez(kept, x=np.arange(3))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ["--raw", str(raw), "--out", str(out), "--workers", "1", "--keep-cache"]
        refused(
            capsys,
            call(prepare_main, args),
            f"{lock_file_for(out)}: {out}",
            f"in use by process {holder.pid}",
        )
        assert kept.is_file() and not out.exists()
    finally:
        holder.kill()
        holder.wait(timeout=60)
    # the killed holder's lock file stays; the next run takes the lock, and removes the file
    assert lock_file_for(out).exists()
    assert call(prepare_main, args) == 0
    assert len(OANetPairs(out)) == 2 and kept.is_file() and not lock_file_for(out).exists()


def test_the_lock_refuses_a_second_holder_in_the_same_process(tmp_path):
    lock = tmp_path / "x.lock"
    with exclusive_lock(lock, "x"):
        assert lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockedError, match=f"{lock}: x is in use by process {os.getpid()}"):
            with exclusive_lock(lock, "x"):
                pass
    assert not lock.exists()
    with exclusive_lock(lock, "x"):  # free again
        pass


# ---------------------------------------------------------------- numbers of configs and options


@pytest.mark.parametrize("value", [math.inf, math.nan, -1.0, 0.0, 1e30])
def test_label_px_is_a_finite_positive_number_of_pixels(value):
    with pytest.raises(
        UserError,
        match=f"model.loss.label_px: expected a positive number .*{re.escape(str(value))}",
    ):
        CorrNetLoss(label_px=value)
    assert CorrNetLoss(label_px=2.0).label_px == 2.0


@pytest.mark.parametrize(
    "name, value",
    [("cls_weight", -1.0), ("essential_clamp", 0.0), ("grid", 0), ("transform_weight", math.nan)],
)
def test_loss_weights_and_clamps_are_checked(name, value):
    with pytest.raises(UserError, match=f"model.loss.{name}: expected a finite number"):
        CorrNetLoss(**{name: value})


def test_seeds_counts_and_budgets_are_checked_where_they_are_parsed(tmp_path, capsys):
    from corrnet.commands.bench import main as bench_main
    from corrnet.commands.prepare3d import main as prepare3d_main
    from corrnet.commands.viz import main as viz_main

    out = ["--out", str(tmp_path / "x.hdf5")]
    cases = [
        (synthetic_main, [*out, "--pairs", "1", "--seed", "-1"], "--seed: expected a seed"),
        (prepare3d_main, [*out, "--synthetic", "--pairs", "1", "--seed", "2**40"], "--seed"),
        (prepare_main, ["--raw", "r", *out, "--min-overlap", "nan"], "--min-overlap: expected a"),
        (bench_main, ["--n", "-5"], "--n: expected matches per pair from 8"),
        (bench_main, ["--target-s", "nan"], "--target-s: expected a number of seconds from 0"),
        (bench_main, ["--threads", "0"], "--threads: expected a count from 1"),
        (viz_main, ["--data", "d.h5", "--pair", "-1", "--out", "p.png"], "--pair: expected a"),
        (viz_main, ["--data", "d.h5", "--pair", "0", "--size", "0", "9"], "--size: expected"),
    ]
    for main, args, needle in cases:
        refused(capsys, call(main, args), needle)


# ---------------------------------------------------------------- signals while starting


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler installed (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    "sig, status, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_while_the_command_starts_is_one_line(tmp_path, sig, status, word):
    """From the moment the ``corrnet`` entry point runs (it catches SIGTERM then; Python alone
    does not), a signal during the heavy imports, the option parsing or the work ends with one
    line: tried at several delays, so that some land during imports and some in the work."""
    endings = []
    for delay in (0.0, 0.05, 0.5, 4.0):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corrnet",
                "eval",
                "--data",
                "synthetic",
                "--quiet",
                "--synthetic-pairs",
                "20",
                "--methods",
                "ransac",
                "--out",
                str(tmp_path / f"r{delay}"),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_sigint,
        )
        try:
            while not _catches_sigterm(proc.pid):
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.001)
            time.sleep(delay)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert "Traceback" not in err, (delay, err)
        if proc.returncode == -sig:  # while the interpreter shuts down: as by default
            assert err == "", (delay, err)
        elif proc.returncode != 0:  # not finished before the signal
            lines = err.strip().splitlines()
            assert proc.returncode == status, (delay, err)
            assert lines in ([f"corrnet: {word}"], [f"corrnet eval: {word}"]), (delay, err)
            endings.append(lines[0])
    assert f"corrnet: {word}" in endings, endings  # at least one landed while it started


# ---------------------------------------------------------------- messages that name the file


def test_a_bad_pair_in_a_dataloader_worker_is_one_line_naming_the_file(syn, tmp_path):
    """torch re-raises a worker's exception with "Caught BadPairError in DataLoader worker
    process 0" and the worker's traceback as its message; the line is the original one."""
    path = _edit(Path(shutil.copy(syn, tmp_path / "bad.hdf5")), BAD_DATASETS["negative ys"][0])
    loader = torch.utils.data.DataLoader(OANetPairs(path), num_workers=1, collate_fn=list)
    with pytest.raises(BadPairError) as err:
        list(loader)
    assert str(err.value).startswith("Caught BadPairError in DataLoader worker process 0")
    assert one_line(err.value) == f"{path}: pair 1: ys: expected epipolar distances >= 0, got -1"
    assert one_line(KeyError("key")) == "key" and one_line(ValueError("a\nb")) == "a"


@pytest.fixture(scope="module")
def pairs3d_file(tmp_path_factory) -> Path:
    from corrnet.commands.prepare3d import main as prepare3d_main

    out = tmp_path_factory.mktemp("p3") / "p3.hdf5"
    assert prepare3d_main(["--synthetic", "--pairs", "1", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("corrnet_layout", np.array([1, 2]), "not a 3-D pairs file"),
        ("inlier_threshold", np.array([0.1, 0.2]), "expected a length in (0, 10000] m, got [0.1"),
        ("inlier_threshold", -1.0, "expected a length in (0, 10000] m, got -1.0"),
        ("voxel_size", np.nan, "voxel_size: expected a length"),
        ("voxel_size", "abc", "voxel_size: expected a length in (0, 10000] m, got abc"),
    ],
)
def test_hdf5_attributes_of_the_wrong_kind_are_one_line(
    pairs3d_file, syn, tmp_path, name, value, message
):
    """An attribute that is an array, a string or out of range: never "the truth value of an
    array is ambiguous" or "only 0-dimensional arrays can be converted"."""
    from corrnet.datasets.pairs3d import Pairs3D, is_pairs3d
    from corrnet.datasets.prepare import recorded_inputs

    path = Path(shutil.copy(pairs3d_file, tmp_path / "p3.hdf5"))
    with h5py.File(path, "r+") as f:
        f.attrs[name] = value
    with pytest.raises(UserError) as err:
        Pairs3D(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), err.value
    assert is_pairs3d(path) == (name != "corrnet_layout")
    with h5py.File(syn, "r+") as f:
        f.attrs["inputs_digest"] = np.arange(3)  # a recorded digest that is no text
    assert recorded_inputs(syn) is None


def test_a_deeply_nested_json_pairs_file_is_one_line(tmp_path, capsys):
    deep = tmp_path / "pairs.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    args = ["--pairs-file", str(deep), "--out", str(tmp_path / "p.hdf5")]
    refused(capsys, call(prepare_main, args), f"{deep}: cannot read", "nested too deeply")


def test_a_full_disk_names_the_output(tmp_path, monkeypatch):
    out = tmp_path / "out.npz"
    out.write_bytes(b"earlier")

    def disk_full(file, **arrays) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError) as err:
        with atomic_path(out, suffix=".tmp.npz") as tmp:
            np.savez(tmp, x=np.arange(3))
    assert err.value.errno == errno.ENOSPC
    assert one_line(err.value) == f"[Errno 28] {out}: No space left on device while writing it"
    with pytest.raises(FileNotFoundError, match="input.png"):  # other errors pass unchanged
        with atomic_path(out):
            raise FileNotFoundError("input.png: no such file")
    assert out.read_bytes() == b"earlier" and sorted(tmp_path.iterdir()) == [out]


def test_a_canvas_beyond_the_renderer_and_the_meta_device_are_refused(tmp_path, syn, capsys):
    """30000 x 20000 px is an option error, not a renderer failure blamed on Vulkan; the meta
    device is refused by every command that takes --device."""
    from corrnet.commands.viz import main as viz_main

    args = ["--data", str(syn), "--pair", "0", "--out", str(tmp_path / "v.png")]
    refused(capsys, call(viz_main, [*args, "--size", "30000", "20000"]), "--size", "30000")
    assert not (tmp_path / "v.png").exists()
    match_args = ["a.png", "b.png", "--out", str(tmp_path / "o"), "--device", "meta"]
    refused(capsys, call(match_main, match_args), "--device", "meta")
    refused(capsys, call(eval_main, ["--data", str(syn), "--device", "meta"]), "--device", "meta")


@pytest.mark.parametrize("command", ["match", "eval"])
@pytest.mark.parametrize(
    "sig, status, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_while_a_picture_renders_leaves_no_folder(
    syn, tmp_path, command, sig, status, word
):
    """The real commands, signalled while a ``corrnet-viz-*`` folder exists (Ctrl-C to the
    process group, SIGTERM to the command): one line, no traceback, no folder left."""
    image = tmp_path / "a.jpg"
    _jpeg(image, _texture(np.random.default_rng(4), (320, 240)))
    args = {
        "match": [str(image), str(image), "--picture", "3d"],
        "eval": ["--data", str(syn), "--viz", "2", "--methods", "corrnet", "--quiet"],
    }[command]
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "corrnet", command, *args, "--out", str(tmp_path / "out")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    try:
        while not any(p.name.startswith("corrnet-viz-") for p in temp.iterdir()):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == status and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"corrnet {command}: {word}", err
    assert list(temp.iterdir()) == []


IN_A_FINALIZER = """
import os, signal, sys, time
from corrnet.errors import run_command

class Resource:
    def __del__(self):  # the signal lands while a finalizer runs, as in ZipFile.__del__
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        time.sleep(0.5)  # delivered here, inside __del__

def body():
    Resource()
    for _ in range(100):
        time.sleep(0.1)
    print("finished", flush=True)

sys.exit(run_command("slow", body))
"""


@pytest.mark.parametrize(
    "sig, status, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")]
)
def test_a_signal_inside_a_finalizer_still_stops_the_command(sig, status, word):
    """Python prints and drops an exception raised in ``__del__``: the command redelivers it."""
    done = subprocess.run(
        [sys.executable, "-c", IN_A_FINALIZER, sig],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_default_sigint,
    )
    assert (done.returncode, done.stdout, done.stderr) == (status, "", f"slow: {word}\n")


def test_a_temporary_folder_is_removed_whatever_ends_the_block(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        with temporary_folder("corrnet-viz-") as folder:
            (folder / "scene.npz").write_bytes(b"x")
            assert folder.parent == tmp_path and folder.name.startswith("corrnet-viz-")
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
