"""Atomic file writes: a file at its final path is either complete or absent.

Outputs are written only to a regular file or a new path (never a device, FIFO, folder or
socket), through a temporary file beside the output whose name :func:`atomic_path` makes
verifiable, so that only temporaries corrnet created are ever removed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMPORARY = re.compile(
    r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)-corrnet-(?P<token>[0-9a-f]{8})(?P<check>[0-9a-f]{8})"
    r"(?P<suffix>.*)$"
)
"""Name of a temporary file of :func:`atomic_path`:
``.<name>.tmp<pid>-corrnet-<token><check><suffix>``, ``check`` a digest of the rest."""

_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Errors of the disk a writer fills (full, over quota, file too large): their messages name no
file, so :func:`atomic_path` adds the output's path."""

_KINDS = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


class NotRegularFileError(OSError):
    """A path that corrnet would read or write is not a regular file."""


def _kind(mode: int) -> str:
    return next((kind for test, kind in _KINDS.items() if test(mode)), "not a regular file")


def _mode(path: Path, what: str) -> int:
    """``st_mode`` of ``path`` through links; FileNotFoundError when absent,
    NotRegularFileError for a loop of symbolic links (expected a regular ``what``)."""
    try:
        return path.stat().st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise NotRegularFileError(
                f"{path}: a loop of symbolic links; expected a regular {what}"
            ) from None
        raise


def check_regular_output(path: str | os.PathLike) -> Path:
    """``path`` if it is absent or a regular file (through links), else NotRegularFileError.

    A dangling link is refused too: writing would replace the link, not create its target.
    """
    path = Path(path)
    try:
        mode = _mode(path, "file or a new path")
    except FileNotFoundError:
        if path.is_symlink():
            raise NotRegularFileError(
                f"{path}: a symbolic link to a missing file; outputs are written only to a "
                f"regular file or a new path"
            ) from None
        return path
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(
            f"{path}: is {_kind(mode)}; outputs are written only to a regular file or a new path"
        )
    return path


def check_regular_input(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it is a regular file (through links): FileNotFoundError when absent,
    NotRegularFileError for a FIFO, device, folder or socket (whose reads may never end)."""
    path = Path(path)
    try:
        mode = _mode(path, what)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such {what}") from None
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(f"{path}: is {_kind(mode)}; expected a regular {what}")
    return path


def _file_mode() -> int:
    """Permissions ``open(path, "w")`` would give a new file: 0o666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _check(name: str, pid: str, token: str, suffix: str) -> str:
    return hashlib.sha256(f"corrnet\0{name}\0{pid}\0{token}\0{suffix}".encode()).hexdigest()[:8]


def _create_temporary(path: Path, suffix: str) -> Path:
    """Create an empty, private temporary file beside ``path`` with a verifiable name."""
    pid = str(os.getpid())
    while True:
        token = secrets.token_hex(4)
        name = f".{path.name}.tmp{pid}-corrnet-{token}{_check(path.name, pid, token, suffix)}"
        tmp = path.parent / f"{name}{suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            continue
        return tmp


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block ends.

    Write the file to the yielded path.  If the block raises, the temporary file is removed
    and whatever was at ``path`` before stays as it was; a killed process leaves a hidden
    ``.<name>.tmp<pid>-corrnet-*`` file, which :func:`remove_stale_temporaries` removes later.
    ``suffix`` is the temporary name's ending (for writers that append their own, e.g.
    ``np.savez`` needs ``.npz``).  The parent folder is created.  ``path`` must be absent or a
    regular file (checked before and again just before the rename): NotRegularFileError.  A full
    disk (or quota) while writing is re-raised as an OSError of the same errno naming ``path``.
    """
    path = check_regular_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path, suffix)
    try:
        try:
            yield tmp
        except OSError as err:
            if err.errno not in _DISK_ERRNOS:
                raise
            raise OSError(err.errno, f"{path}: {os.strerror(err.errno)} while writing it") from err
        os.chmod(tmp, _file_mode())  # created 0o600
        os.replace(tmp, check_regular_output(path))
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def temporary_folder(prefix: str) -> Iterator[Path]:
    """A new folder ``<prefix><64 random bits>`` in the temporary folder, removed with its
    contents when the block ends, also when a signal ends it.

    Unlike ``tempfile.TemporaryDirectory`` there is no instant between the folder's creation
    and the start of the block that removes it, and SIGINT / SIGTERM wait while it is removed
    (a handler that raises would leave it half-removed).
    """
    path = Path(tempfile.gettempdir(), f"{prefix}{secrets.token_hex(8)}")
    try:
        path.mkdir(mode=0o700)
        yield path
    finally:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:  # beyond any pid
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_temporary(name: str) -> bool:
    """Whether a file name is one :func:`atomic_path` made (its digest matches)."""
    m = _TEMPORARY.match(name)
    return bool(m) and m["check"] == _check(m["name"], m["pid"], m["token"], m["suffix"])


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_path` writers left in ``folder``.

    Only regular files whose name :func:`atomic_path` made (verified by its digest) and whose
    writer process (the pid in the name) no longer runs on this machine are removed, so a
    concurrent writer keeps its file and a user's file that merely looks alike is never
    touched.  Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if (
                is_temporary(entry.name)
                and entry.is_file(follow_symlinks=False)
                and not _alive(int(_TEMPORARY.match(entry.name)["pid"]))
            ):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed


class LockedError(BlockingIOError):
    """Another process holds the lock of :func:`exclusive_lock` (its message names it)."""


@contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on the lock file ``path`` (created, and removed on exit)
    while the block runs, so that two processes never work on the same ``what``.

    The file holds the holder's pid.  A second process is refused at once with
    :class:`LockedError` naming the lock file, ``what`` and the holder's pid (no waiting: a
    run that might take hours should not queue silently).  The lock ends with the process
    too, so a killed holder leaves a file that the next run simply locks again.
    """
    import fcntl

    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{path}: {what} is in use by process {holder}; wait for it to end or choose "
                "another path"
            ) from None
        try:  # the previous holder may have removed the file between our open and flock
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still held: a waiting opener sees another inode
        os.close(fd)
