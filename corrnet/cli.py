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
import sys
from collections.abc import Sequence

from corrnet import __version__
from corrnet.commands import COMMANDS

USAGE = (
    "usage: corrnet COMMAND [ARGS]   (corrnet COMMAND --help for its options)\n\ncommands:\n"
    + "\n".join(f"  {name:11s}{what}" for name, what in COMMANDS.items())
)


def main(argv: Sequence[str] | None = None, prog: str = "corrnet") -> int:
    """Dispatch ``corrnet COMMAND ARGS`` to ``corrnet.commands.COMMAND.main``; returns the
    exit status (2 for a missing or unknown command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
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
