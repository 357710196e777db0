"""The ``corrnet`` console command: ``corrnet COMMAND [ARGS]``, one verb per tool.

Each verb is the module ``corrnet.commands.<verb>``, imported only when it runs, so that
``corrnet --help`` and ``corrnet COMMAND --help`` need no torch, OpenCV or Lightning before
the command line is parsed (the option values live in :mod:`corrnet.constants`), except
``corrnet train``, whose options are those of Lightning's classes (its plain ``--help`` comes
from a cache, :mod:`corrnet.helpcache`).  ``python -m corrnet`` is
the same command.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from corrnet import __version__
from corrnet.commands import COMMANDS

USAGE = (
    "usage: corrnet COMMAND [ARGS]   (corrnet COMMAND --help for its options)\n\ncommands:\n"
    + "\n".join(f"  {name:11s}{what}" for name, what in COMMANDS.items())
)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_signals(prog: str) -> dict[int, object]:
    """Make SIGINT and SIGTERM end the process at once with one line, ``prog: interrupted``
    (exit 130) or ``prog: terminated`` (143), while the command starts (imports, option
    parsing: nothing to clean up yet) and after it ends; a command's own error boundary
    (:func:`corrnet.errors.run_command`) raises instead while it runs, so that its cleanup
    runs.  A signal the parent ignores stays ignored.  Returns the previous handlers."""

    def stop(signum: int, frame: FrameType | None) -> None:
        word = "interrupted" if signum == signal.SIGINT else "terminated"
        try:  # what the finished command printed; not if the signal came in mid-write
            sys.stdout.flush()
        except (RuntimeError, OSError, ValueError):
            pass
        os.write(2, f"{prog}: {word}\n".encode())
        os._exit(128 + signum)

    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, stop)
    return previous


def main(argv: Sequence[str] | None = None, prog: str = "corrnet") -> int:
    """Dispatch ``corrnet COMMAND ARGS`` to ``corrnet.commands.COMMAND.main``; returns the
    exit status (2 for a missing or unknown command).  SIGINT or SIGTERM at any time ends it
    with one line and exit status 130 or 143 (:func:`_stop_signals`); with ``argv`` given
    (a call from Python) the previous handlers are back when it returns."""
    previous = _stop_signals(prog)
    if argv is None:  # the program: the handlers stay until the process ends
        return _dispatch(sys.argv[1:], prog)
    try:
        return _dispatch(list(argv), prog)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _dispatch(argv: list[str], prog: str) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if argv[:1] == ["--version"]:
        print(f"corrnet {__version__}")
        return 0
    if not argv or argv[0] not in COMMANDS:
        got = f"got {argv[0]!r}" if argv else "got none"
        print(f"{prog}: error: expected a command ({', '.join(COMMANDS)}), {got}", file=sys.stderr)
        return 2
    if argv[0] == "train":  # plain --help from the cache: no Lightning to import
        from corrnet.helpcache import cached_help

        status = cached_help(argv[1:], f"{prog} train")
        if status is not None:
            return status
    command = importlib.import_module(f"corrnet.commands.{argv[0]}")
    return command.main(argv[1:], prog=f"{prog} {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
