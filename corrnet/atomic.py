"""Atomic file writes: a file at its final path is either complete or absent."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMPORARY = re.compile(r"^\..+\.tmp(\d+)-[A-Za-z0-9_]{8}")
"""Name of a temporary file of :func:`atomic_path`: ``.<name>.tmp<pid>-<random><suffix>``."""


def _file_mode() -> int:
    """Permissions ``open(path, "w")`` would give a new file: 0o666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block ends.

    Write the file to the yielded path.  If the block raises, the temporary file is removed
    and whatever was at ``path`` before stays as it was; a killed process leaves a hidden
    ``.<name>.tmp<pid>-*`` file, which :func:`remove_stale_temporaries` removes later.
    ``suffix`` is the temporary name's ending (for writers that append their own, e.g.
    ``np.savez`` needs ``.npz``).  The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.tmp{os.getpid()}-", suffix=suffix, dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _file_mode())  # mkstemp creates 0o600
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_path` writers left in ``folder``.

    Only files whose writer process (the pid in the name) no longer runs on this machine are
    removed, so a concurrent writer keeps its file.  Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMPORARY.match(entry.name)
            if match and entry.is_file(follow_symlinks=False) and not _alive(int(match.group(1))):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed
