"""Nothing lost, nothing hung, nothing silently wrong: hostile inputs at every boundary end with
one line naming the file, key or argument, and never touch what they should not."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from corrnet.atomic import (
    NotRegularFileError,
    atomic_path,
    check_regular_input,
    is_temporary,
    remove_stale_temporaries,
)
from corrnet.checkpoint import PRETRAINED, load_model
from corrnet.commands.merge import main as merge_main
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
from corrnet.datasets.prepare import image_digest
from corrnet.match import main as match_main
from corrnet.verifier import as_device
from tests import test_cli_errors
from tests.test_cli_errors import ROOT, call, eval_main, refused
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
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"step": torch.tensor(8)}, path)
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


def test_merge_keeps_absent_side_information_absent(syn, tmp_path):
    bare = _without(syn, tmp_path / "bare.hdf5", SIDE_INFO_KEYS + INTRINSICS_KEYS)
    out = tmp_path / "merged.hdf5"
    assert merge_main([str(bare), str(bare), "--out", str(out)]) == 0
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
