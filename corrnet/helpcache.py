"""The rendered help of ``corrnet train``, cached in the user cache folder.

``corrnet train --help`` has to build LightningCLI's parser, which imports Lightning and torch
(seconds).  A plain ``--help`` or ``-h`` (no other argument) is answered from
``$XDG_CACHE_HOME/corrnet`` (``~/.cache/corrnet``) when a file there has the same key: the
versions of corrnet, lightning, jsonargparse and torch (read from the installed metadata,
nothing imported), the content of the source files that define the options
(:func:`help_sources`), the program name and the terminal width.  On a miss, or a cache file
that cannot be read or whose checksum does not match, the help is rendered live, printed, and
written to the cache (atomically; a cache that cannot be written is skipped).  This module
imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path

from corrnet.atomic import atomic_path

HELP_FLAGS = (["-h"], ["--help"])
"""The argument lists answered from the cache."""
PACKAGES = ("corrnet", "lightning", "jsonargparse", "torch")
"""Distributions whose versions are part of the key."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/corrnet``, or ``~/.cache/corrnet`` where the variable is unset or
    empty."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "corrnet"


def help_sources() -> list[Path]:
    """The files that define ``corrnet train``'s options: the training package, the model
    config, the command and the shipped configs, sorted."""
    from corrnet.commands import config_dir

    package = Path(__file__).resolve().parent
    files = [
        *(package / "training").glob("*.py"),
        package / "models" / "corrnet.py",
        package / "commands" / "train.py",
        *config_dir().rglob("*.yaml"),
    ]
    return sorted(files)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def help_key(prog: str, sources: Iterable[Path] | None = None, columns: int | None = None) -> str:
    """Hex SHA-256 of what the help text depends on: :data:`PACKAGES`' versions, the name and
    content of each file of ``sources`` (default :func:`help_sources`), ``prog`` and the
    terminal width ``columns`` (default: what argparse uses, ``$COLUMNS`` or the terminal's)."""
    digest = hashlib.sha256()
    columns = shutil.get_terminal_size().columns if columns is None else columns
    for part in (*(f"{p}={_version(p)}" for p in PACKAGES), f"prog={prog}", f"cols={columns}"):
        digest.update(part.encode() + b"\0")
    for path in help_sources() if sources is None else sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_cached(path: Path) -> str | None:
    """The help text stored at ``path`` (first line: the SHA-256 of the rest); None for a
    missing, unreadable or corrupted file."""
    try:
        stored = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    checksum, _, text = stored.partition("\n")
    return text if checksum == _checksum(text) else None


def write_cached(path: Path, text: str) -> None:
    """Store ``text`` at ``path`` with its checksum, atomically; an unwritable cache is
    skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(f"{_checksum(text)}\n{text}", encoding="utf-8")
    except OSError:
        pass


def render_live(main: Callable[[Sequence[str], str], int], flag: str, prog: str) -> tuple[int, str]:
    """Exit status and standard output of ``main([flag], prog)`` (argparse ends help with
    SystemExit)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            status = main([flag], prog)
        except SystemExit as done:
            status = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
    return status, out.getvalue()


def _train_main(argv: Sequence[str], prog: str) -> int:
    from corrnet.commands.train import main

    return main(argv, prog)


def cached_help(
    argv: Sequence[str],
    prog: str,
    main: Callable[[Sequence[str], str], int] = _train_main,
    key: str | None = None,
) -> int | None:
    """Answer ``argv`` if it is one of :data:`HELP_FLAGS`: print the help of ``main`` (default
    ``corrnet train``'s) from the cache, or render it live and cache it; returns the exit
    status.  None (nothing printed) for any other argument list."""
    if list(argv) not in HELP_FLAGS:
        return None
    path = cache_dir() / f"train-help-{key or help_key(prog)}.txt"
    text = read_cached(path)
    status = 0
    if text is None:
        status, text = render_live(main, argv[0], prog)
        if status == 0:
            write_cached(path, text)
    sys.stdout.write(text)
    sys.stdout.flush()
    return status
