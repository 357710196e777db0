"""One way every command reports bad input: ``prog: error: <one line>`` and exit status 2.

Commands validate at the boundary (files, pairs, keys, ground truth, predictions, configs,
arguments) and raise :class:`UserError` (or a subclass), or an OSError on the user's paths,
whose message names the file, pair or key and what was expected; :func:`run_command` turns
exactly those into one line.  Anything else (a plain ValueError, KeyError, TypeError from
inside) is a bug: it keeps its traceback and the exit status is 1.  ``CORRNET_DEBUG=1``
re-raises bad input with the traceback too.
"""

from __future__ import annotations

import _thread
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from corrnet.atomic import check_regular_output


class UserError(ValueError):
    """Bad input: a file, pair, key, configuration value or argument the user gave is not what
    was expected; the message names it.  A ValueError, so that callers of the library that
    catch ValueError keep working."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError)
"""Exceptions that mean bad input: UserError, and OSError on the user's paths
(FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, h5py's unreadable
files)."""

USAGE_ERROR = 2
"""Exit status of a command refused for bad input (argparse's)."""
INTERRUPTED, TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM
"""Exit statuses of a command stopped by SIGINT (Ctrl-C) or SIGTERM, as a shell reports them."""


REDELIVERY_DELAY_S = 0.01
"""Delay before a signal dropped in a finalizer is delivered again (:func:`_redeliver`)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and context managers
    (temporary files and folders) clean up as after Ctrl-C."""


_command_pid: int | None = None
"""The process whose :func:`run_command` installed the SIGTERM handler (not a forked child)."""


def _terminate(signum: int, frame: object) -> None:
    if os.getpid() != _command_pid:  # a forked child before its initializer: die as by default
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def _redeliver(fallback: Callable, unraisable: object) -> None:
    """``sys.unraisablehook`` while a command runs: a signal's exception raised inside a
    finalizer (``__del__``, a weakref callback), which Python would print as "Exception ignored"
    and drop, is delivered again to the command's main thread once this hook returned (from a
    timer thread: a handler run in the hook would be dropped as well)."""
    stop = unraisable.exc_value
    if isinstance(stop, KeyboardInterrupt) and os.getpid() == _command_pid:
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        timer = threading.Timer(REDELIVERY_DELAY_S, _thread.interrupt_main, (signum,))
        timer.daemon = True
        timer.start()
        return
    fallback(unraisable)


def worker_signals() -> None:
    """For a process pool's initializer: Ctrl-C, which reaches the whole process group, is the
    parent command's to report (ignored in the worker); SIGTERM (the pool's terminate) ends
    the worker as by default."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


_WORKER_WRAPPED = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")
"""The start of the message torch gives an exception it re-raises from a DataLoader worker (the
worker's traceback, the original message on its last lines)."""


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (a KeyError's without its quotes; for one
    re-raised from a DataLoader worker, the first line of the worker's original message)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = text.strip().splitlines()
    if _WORKER_WRAPPED.match(text):
        kind = type(err)
        name = kind.__qualname__
        name = name if kind.__module__ == "builtins" else f"{kind.__module__}.{name}"
        original = [line for line in lines if line.startswith(f"{name}: ")]
        if original:
            return original[-1][len(name) + 2 :]
    return lines[0] if lines else type(err).__name__


def run_command(
    prog: str, body: Callable[[], int | None], errors: tuple[type[BaseException], ...] = USER_ERRORS
) -> int:
    """Run ``body()``; one of ``errors`` prints ``prog: error: ...`` and returns 2.

    Returns body's exit status (None counts as 0).  SIGINT and SIGTERM end it with the line
    ``prog: interrupted`` or ``prog: terminated`` and status 130 or 143, after its cleanup ran.
    """
    global _command_pid
    main = threading.current_thread() is threading.main_thread()
    _command_pid = os.getpid()
    handlers = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _terminate}
    previous = {}
    hook = sys.unraisablehook
    if main:
        sys.unraisablehook = partial(_redeliver, hook)
    for signum, handler in handlers.items() if main else ():
        if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored by the parent: stays so
            previous[signum] = signal.signal(signum, handler)
    try:
        return body() or 0
    except errors as err:
        if os.environ.get("CORRNET_DEBUG"):
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt as stop:
        if os.environ.get("CORRNET_DEBUG"):
            raise
        terminated = isinstance(stop, Terminated)
        print(f"{prog}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return TERMINATED if terminated else INTERRUPTED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = hook


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (also through links; by resolved path if absent)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_output(out: Path, inputs: Mapping[str, Path | None], overwrite: bool | None) -> Path:
    """Refuse an output path that is one of the inputs, that exists (unless ``overwrite``), or
    that is neither a regular file nor a new path (a device, FIFO or folder: OSError).

    inputs: option name -> path (None entries are ignored).  ``overwrite=None`` skips the
    existence check (for writers that verify an existing file themselves).
    Raises UserError (output is an input) or FileExistsError, naming the path and the option.
    """
    for option, path in inputs.items():
        if path is not None and same_file(out, path):
            raise UserError(f"{out}: is also the input {option}; choose another output path")
    if overwrite is False and (out.exists() or out.is_symlink()):
        raise FileExistsError(f"{out}: already exists; pass --overwrite to replace it")
    return check_regular_output(out)
