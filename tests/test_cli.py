"""The ``corrnet`` command: its verbs, lazy imports, prog names, shipped configs, and the error
boundary (bad input: one line, exit 2; a bug: its traceback, exit 1)."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import corrnet.datasets.oanet_hdf5 as oanet_hdf5
from corrnet.cli import main as corrnet
from corrnet.commands import COMMANDS, config_dir, config_path
from corrnet.commands.train import shipped_configs
from corrnet.datasets import write_synthetic
from corrnet.errors import USER_ERRORS, UserError, run_command

ROOT = Path(__file__).resolve().parents[1]
VERBS = (
    "match",
    "colmap",
    "prepare",
    "prepare3d",
    "synthetic",
    "merge",
    "train",
    "eval",
    "viz",
    "bench",
)


def python(*args: str) -> subprocess.CompletedProcess:
    """Run ``python args`` with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CORRNET_DEBUG", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)


def test_every_verb_is_a_module_with_main_argv_prog():
    assert tuple(COMMANDS) == VERBS
    for verb in VERBS:
        main = importlib.import_module(f"corrnet.commands.{verb}").main
        params = inspect.signature(main).parameters
        assert list(params)[:2] == ["argv", "prog"] and params["prog"].default == f"corrnet {verb}"


def test_usage_lists_the_verbs_and_a_wrong_verb_is_one_line(capsys):
    assert corrnet(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {verb} " in out for verb in VERBS), out
    assert corrnet(["frobnicate"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"corrnet: error: expected a command ({', '.join(VERBS)}), got 'frobnicate'"]
    assert corrnet([]) == 2 and "got none" in capsys.readouterr().err


HEAVY = ("torch", "cv2", "lightning", "h5py", "open3d", "pycolmap", "poselib")
"""Packages that ``corrnet [VERB] --help`` must not import (seconds of start-up)."""


@pytest.mark.parametrize(
    "argv", [["--help"]] + [[verb, "--help"] for verb in VERBS if verb != "train"]
)
def test_help_imports_no_torch_opencv_or_lightning(argv):
    """Every verb but ``train`` (whose options are Lightning's classes) parses without them."""
    done = python(
        "-c",
        "import sys\nfrom corrnet.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))",
        *argv,
    )
    assert done.returncode == 0, done.stderr
    usage = f"usage: corrnet {argv[0]} " if len(argv) > 1 else "usage: corrnet COMMAND"
    assert done.stdout.startswith(usage), done.stdout[:200]
    assert done.stdout.splitlines()[-1] == "[]", done.stdout


def test_prog_name_in_error_lines_for_both_ways_of_calling(tmp_path, capsys):
    out = tmp_path / "s.hdf5"
    assert corrnet(["merge", str(tmp_path / "missing.hdf5"), "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("corrnet merge: error: ") and "missing.hdf5" in line, line
    script = python(
        str(ROOT / "data" / "merge.py"),
        str(tmp_path / "missing.hdf5"),
        "--out",
        str(out),
    )
    assert script.returncode == 2, script.stderr
    assert script.stderr.startswith("merge.py: error: ") and "missing.hdf5" in script.stderr
    assert len(script.stderr.strip().splitlines()) == 1, script.stderr


@pytest.mark.parametrize(
    "entry, prog",
    [
        (["train.py"], "train.py"),
        (["eval.py"], "eval.py"),
        (["data/prepare.py"], "prepare.py"),
        (["data/prepare3d.py"], "prepare3d.py"),
        (["data/synthetic.py"], "synthetic.py"),
        (["data/merge.py"], "merge.py"),
        (["benchmarks/bench_network.py"], "bench_network.py"),
        (["-m", "corrnet.visualization"], "python -m corrnet.visualization"),
        (["-m", "corrnet.match"], "python -m corrnet.match"),
        (["-m", "corrnet.pairs"], "python -m corrnet.pairs"),
        (["-m", "corrnet.colmap_db"], "python -m corrnet.colmap_db"),
        (["-m", "corrnet", "eval"], "corrnet eval"),
        (["-m", "corrnet", "colmap"], "corrnet colmap"),
    ],
)
def test_every_documented_entry_point_still_answers(entry, prog):
    script = [str(ROOT / entry[0])] if entry[0].endswith(".py") else entry
    done = python(*script, "--help")
    assert done.returncode == 0 and done.stderr == "", done.stderr  # no warning either
    assert done.stdout.startswith(f"usage: {prog} "), done.stdout[:200]


def test_config_names_resolve_to_the_shipped_files(tmp_path):
    assert config_path("demo") == str(config_dir() / "demo.yaml")
    assert Path(config_path("demo")).is_file() and Path(config_path("model/tiny")).is_file()
    assert config_dir().resolve() == (ROOT / "configs").resolve()  # the checkout's own folder
    for path in ("configs/demo.yaml", str(tmp_path / "mine.yaml"), "mine.yml"):
        assert config_path(path) == path  # a path stays a path, existing or not
    assert shipped_configs(["--config", "demo", "--config=model/tiny", "--x", "demo"]) == [
        "--config",
        config_path("demo"),
        "--config=" + config_path("model/tiny"),
        "--x",
        "demo",
    ]


def test_user_errors_are_one_family_that_old_callers_still_catch():
    assert issubclass(UserError, ValueError) and issubclass(oanet_hdf5.BadPairError, UserError)
    assert not any(issubclass(e, (KeyError, TypeError)) for e in USER_ERRORS)
    assert ValueError not in USER_ERRORS and KeyError not in USER_ERRORS


@pytest.mark.parametrize("bug", [KeyError, ValueError, TypeError])
def test_run_command_lets_a_bug_through(bug, capsys):
    def body() -> None:
        raise bug("internal")

    with pytest.raises(bug):
        run_command("prog", body)
    assert capsys.readouterr().err == ""

    def bad_input() -> None:
        raise UserError("x.hdf5: expected a file")

    assert run_command("prog", bad_input) == 2
    assert capsys.readouterr().err == "prog: error: x.hdf5: expected a file\n"


def _pairs(tmp_path: Path) -> Path:
    path = tmp_path / "a.hdf5"
    write_synthetic(path, 1, seed=0, mode="mixed", num_matches=50)
    return path


def test_a_bug_inside_a_command_is_not_dressed_as_bad_input(tmp_path, monkeypatch):
    """A KeyError planted in the function ``corrnet merge`` calls: the traceback, exit 1."""
    a = _pairs(tmp_path)

    def broken(*args, **kwargs):
        raise KeyError("groups")

    monkeypatch.setattr(oanet_hdf5, "merge_oanet_hdf5", broken)
    with pytest.raises(KeyError, match="groups"):
        corrnet(["merge", str(a), "--out", str(tmp_path / "out.hdf5")])
    # the console command in a fresh process: Python's traceback and exit status 1
    done = python(
        "-c",
        "import sys\nimport corrnet.datasets.oanet_hdf5 as m\n"
        "def broken(*args, **kwargs):\n    raise KeyError('groups')\n"
        "m.merge_oanet_hdf5 = broken\nfrom corrnet.cli import main\nsys.exit(main(sys.argv[1:]))",
        "merge",
        str(a),
        "--out",
        str(tmp_path / "out.hdf5"),
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" in done.stderr and "KeyError: 'groups'" in done.stderr
    assert "error:" not in done.stderr
    assert not (tmp_path / "out.hdf5").exists()


def test_bad_input_inside_a_command_is_one_line(tmp_path, capsys):
    a, bad = _pairs(tmp_path), tmp_path / "bad.hdf5"
    bad.write_text("not hdf5")
    capsys.readouterr()  # the writer's progress bar
    assert corrnet(["merge", str(a), str(bad), "--out", str(tmp_path / "out.hdf5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("corrnet merge: error: ") and str(bad) in err[0]
