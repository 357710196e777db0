"""``corrnet train --help`` from the cache: the same text as the live help, a key that changes
with what the help depends on, and live rendering for a damaged cache file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import corrnet.helpcache as helpcache
from corrnet.helpcache import cache_dir, cached_help, help_key, help_sources

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cache), "COLUMNS": "97"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_cached_train_help_equals_the_live_one_and_imports_no_lightning(tmp_path):
    live = _run(
        "from corrnet.commands.train import main\ntry:\n    main(['--help'])\n"
        "except SystemExit as e:\n    assert e.code == 0",
        tmp_path,
    )
    assert live.returncode == 0 and live.stdout.startswith("usage: corrnet train "), live.stderr
    assert not (tmp_path / "corrnet").exists()  # the live path does not touch the cache
    cli = (
        "import sys\nfrom corrnet.cli import main\nstatus = main(sys.argv[1:])\n"
        "print('lightning' in sys.modules, status)"
    )
    runs = [
        _run(f"import sys; sys.argv[1:] = ['train', '{f}']\n" + cli, tmp_path)
        for f in ("--help", "-h")
    ]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    first, second = (r.stdout.rsplit("\n", 2) for r in runs)
    assert first[0] + "\n" == live.stdout and first[1] == "True 0"  # a miss: rendered live
    assert second[0] + "\n" == live.stdout and second[1] == "False 0"  # a hit: no Lightning
    assert len(list((tmp_path / "corrnet").glob("train-help-*.txt"))) == 1


def _fake(calls: list[str]):
    def main(argv, prog):
        calls.append(argv[0])
        print(f"usage: {prog} [-h]\n\nhelp number {len(calls)}")
        raise SystemExit(0)

    return main


def test_a_changed_key_misses_and_a_damaged_file_is_rendered_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "corrnet"
    calls: list[str] = []
    main = _fake(calls)
    assert cached_help(["--help"], "p", main, key="k1") == 0
    text = capsys.readouterr().out
    assert text == "usage: p [-h]\n\nhelp number 1\n" and calls == ["--help"]
    assert cached_help(["-h"], "p", main, key="k1") == 0  # a hit: main is not called
    assert capsys.readouterr().out == text and calls == ["--help"]
    assert cached_help(["-h"], "p", main, key="k2") == 0  # another key: rendered live
    assert capsys.readouterr().out.endswith("help number 2\n") and calls == ["--help", "-h"]

    path = tmp_path / "corrnet" / "train-help-k1.txt"
    for damage in (b"x" * 64 + b"\nusage: forged\n", b"\xff\xfe", b""):
        path.write_bytes(damage)
        assert cached_help(["--help"], "p", main, key="k1") == 0
        out = capsys.readouterr().out
        assert out == f"usage: p [-h]\n\nhelp number {len(calls)}\n"
        assert helpcache.read_cached(path) == out  # written again, whole
    path.unlink()
    path.mkdir()  # unreadable and unwritable: live, nothing raised
    assert cached_help(["--help"], "p", main, key="k1") == 0
    assert capsys.readouterr().out.endswith(f"help number {len(calls)}\n")

    for argv in ([], ["--help", "--config", "demo"], ["--print_config"]):
        assert cached_help(argv, "p", main, key="k1") is None  # the normal way
    assert capsys.readouterr().out == ""


def test_help_key_follows_versions_sources_prog_and_width(tmp_path, monkeypatch):
    source = tmp_path / "module.py"
    source.write_text("a = 1\n")
    key = help_key("corrnet train", [source], 80)
    assert key == help_key("corrnet train", [source], 80)
    assert key != help_key("corrnet train", [source], 81)
    assert key != help_key("train.py", [source], 80)
    monkeypatch.setenv("COLUMNS", "123")
    assert help_key("p", [source]) == help_key("p", [source], 123)
    source.write_text("a = 2\n")
    assert key != help_key("corrnet train", [source], 80)
    source.write_text("a = 1\n")
    monkeypatch.setattr(helpcache.metadata, "version", lambda name: "0.0.0-test")
    assert key != help_key("corrnet train", [source], 80)

    names = {p.relative_to(ROOT).as_posix() for p in help_sources()}
    for expected in (
        "corrnet/training/module.py",
        "corrnet/training/datamodule.py",
        "corrnet/models/corrnet.py",
        "corrnet/commands/train.py",
        "configs/demo.yaml",
        "configs/model/tiny.yaml",
    ):
        assert expected in names


def test_train_py_answers_help_from_the_cache_under_its_own_name(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path)}
    done = [
        subprocess.run(
            [sys.executable, str(ROOT / "train.py"), flag], capture_output=True, text=True, env=env
        )
        for flag in ("--help", "-h")
    ]
    assert [d.returncode for d in done] == [0, 0] and done[0].stdout == done[1].stdout
    assert done[1].stdout.startswith("usage: train.py ") and done[1].stderr == ""
    assert len(list((tmp_path / "corrnet").glob("train-help-*.txt"))) == 1
