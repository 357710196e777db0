"""The wheel: built from the sources, installed into a folder of its own, and its console
command run from outside the checkout (train on a shipped config, eval, match)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.test_match import synthetic_pair

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("corrnet", "configs", "pyproject.toml", "README.md")
"""What the build reads: a copy of these keeps build/ and *.egg-info out of the checkout."""
TRAIN_SMALL = [
    "--trainer.max_steps",
    "20",
    "--trainer.val_check_interval",
    "10",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.enable_progress_bar",
    "false",
    "--data.num_workers",
    "0",
    "--data.batch_size",
    "2",
    "--data.num_matches",
    "128",
    "--data.synthetic_val_pairs",
    "2",
]
REPORT_ORIGIN = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('corrnet from', sys.modules['corrnet'].__file__))\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
"""Runs a console script (argv[1]) and prints, at exit, the file corrnet was imported from."""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("build")
    for name in SOURCES:
        src, dst = ROOT / name, tmp / "src" / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp / "dist"), str(tmp / "src")],
        check=True,
        capture_output=True,
    )
    (built,) = (tmp / "dist").glob("corrnet-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


def test_the_wheel_holds_every_module_the_configs_and_the_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "corrnet").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    configs = {
        "corrnet/configs/" + p.relative_to(ROOT / "configs").as_posix()
        for p in (ROOT / "configs").rglob("*.yaml")
    }
    assert configs <= names and "corrnet/configs/demo.yaml" in configs, sorted(configs - names)
    weights = {p.relative_to(ROOT).as_posix() for p in (ROOT / "corrnet/pretrained").glob("*.pt")}
    assert weights and weights <= names


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Two views of a textured scene (tests/test_match.py's pair)."""
    return synthetic_pair.__wrapped__(tmp_path_factory)["images"]


def corrnet(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed console command ``corrnet args`` with only the install on the path."""
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-c", REPORT_ORIGIN, str(site / "bin" / "corrnet"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    origin = done.stdout.strip().splitlines()[-1]
    assert origin == f"corrnet from {site / 'corrnet' / '__init__.py'}", origin
    return done


def test_installed_commands_train_eval_and_match_outside_the_checkout(site, tmp_path, images):
    work = tmp_path / "work"
    work.mkdir()
    corrnet(site, work, "train", "--config", "demo", *TRAIN_SMALL)
    last = work / "runs/demo/checkpoints/last.ckpt"  # demo.yaml's folders, under the cwd
    assert last.is_file()
    done = corrnet(
        site, work, "eval", "--data", "synthetic", "--max-pairs", "5", "--checkpoint", str(last)
    )
    assert "5 pairs" in done.stdout and (work / "runs/eval/synthetic-test/report.md").is_file()
    image1, image2 = map(str, images)
    corrnet(site, work, "match", image1, image2, "--out", "pair", "--no-picture")
    assert (work / "pair" / "pose.json").is_file()
