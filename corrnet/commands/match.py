"""``corrnet match IMG1 IMG2 --out DIR ...`` and ``corrnet match --pairs PAIRS.txt --images DIR
--out OUT ...`` (the pairs mode): :func:`corrnet.match.main`, which is also
``python -m corrnet.match``."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None, prog: str = "corrnet match") -> int:
    """Entry point; returns the exit status (see :func:`corrnet.match.main`)."""
    from corrnet.match import main as match_main

    return match_main(argv, prog)
