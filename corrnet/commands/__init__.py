"""The ``corrnet`` commands: one module per verb, each with ``main(argv, prog) -> int``.

:mod:`corrnet.cli` imports a verb's module only when that verb runs, so this package and the
dispatcher stay light; every verb but ``train`` (Lightning's options) imports torch, OpenCV
and the like only after its command line is parsed.
"""

from __future__ import annotations

from pathlib import Path

COMMANDS = {
    "match": "two images in, relative pose and a picture out (--pairs: a pairs list)",
    "colmap": "verify a COLMAP database's matches, write its two-view geometries",
    "prepare": "putative SIFT matches with ground truth from images, in OANet's HDF5 layout",
    "prepare3d": "3-D point-cloud pairs with rigid ground truth and FPFH matches",
    "synthetic": "synthetic two-view pairs in OANet's HDF5 layout",
    "merge": "concatenate OANet-layout HDF5 files into one",
    "train": "train CorrNet with Lightning (--config NAME takes a shipped config)",
    "eval": "relative-pose (or 3-D registration) evaluation against classical baselines",
    "viz": "render one pair of an OANet-layout HDF5 file",
    "bench": "network speed and memory against OpenCV RANSAC / MAGSAC",
}
"""Verb -> one line for ``corrnet --help``; the verb's module is ``corrnet.commands.<verb>``."""


def config_dir() -> Path:
    """The shipped training configs: ``corrnet/configs`` in an installed wheel, the checkout's
    top-level ``configs/`` otherwise (editable install, or run from the repository root)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


def config_path(value: str) -> str:
    """``--config`` value -> file: a bare name (``demo``, ``model/tiny``) is the shipped
    ``<config_dir()>/<name>.yaml``; anything else (a suffix such as ``.yaml``, an existing
    file) is a path and returned unchanged, so that its own error names it."""
    if Path(value).suffix or Path(value).is_file():
        return value
    return str(config_dir() / f"{value}.yaml")
