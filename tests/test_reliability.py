"""Nothing lost, nothing hung, nothing silently wrong: hostile inputs at every boundary end with
one line naming the file, key or argument, and never touch what they should not."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch

from corrnet.atomic import (
    NotRegularFileError,
    atomic_path,
    check_regular_input,
    is_temporary,
    remove_stale_temporaries,
)
from corrnet.training.cli import AtomicCheckpointIO
from corrnet.training.cli import main as train_main
from data.merge import main as merge_main
from data.synthetic import main as synthetic_main
from tests.test_cli_errors import call, refused
from tests.test_train import _args as train_args

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
    from corrnet.training.cli import CorrNetCLI
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
