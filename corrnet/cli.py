"""The ``corrnet`` console command: ``corrnet COMMAND ...``; commands: ``match`` (see corrnet.match)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

COMMANDS = {"match": "two images in, relative pose and picture out (python -m corrnet.match)"}
USAGE = (
    "usage: corrnet COMMAND [ARGS] (corrnet COMMAND --help for its options)\ncommands:\n"
    + "\n".join(f"  {name:8s}{what}" for name, what in COMMANDS.items())
)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``corrnet COMMAND ARGS`` to the command's ``main``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if not argv or argv[0] not in COMMANDS:
        got = f"got {argv[0]!r}" if argv else "got none"
        print(f"corrnet: error: expected a command ({', '.join(COMMANDS)}), {got}", file=sys.stderr)
        return 2
    from corrnet.match import main as match_main

    return match_main(argv[1:], prog="corrnet match")


if __name__ == "__main__":
    sys.exit(main())
