"""``corrnet colmap --database DB ...``: :func:`corrnet.colmap_db.main`, which is also
``python -m corrnet.colmap_db``."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None, prog: str = "corrnet colmap") -> int:
    """Entry point; returns the exit status (see :func:`corrnet.colmap_db.main`)."""
    from corrnet.colmap_db import main as colmap_main

    return colmap_main(argv, prog)
