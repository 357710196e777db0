"""Atomic file writes: a file at its final path is either complete or absent."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _file_mode() -> int:
    """Permissions ``open(path, "w")`` would give a new file: 0o666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block ends.

    Write the file to the yielded path.  If the block raises (or the process is killed) the
    temporary file is removed or left as a hidden ``.name.*`` file, and whatever was at
    ``path`` before stays as it was.  ``suffix`` is the temporary name's ending (for writers
    that append their own, e.g. ``np.savez`` needs ``.npz``).  The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _file_mode())  # mkstemp creates 0o600
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
