"""corrnet: learned correspondence pruning and relative pose for two-view geometry.

``corrnet.match_images(img1, img2, K1, K2)`` -> :class:`corrnet.match.MatchResult` is the
one-call pose of two images; it is imported on first use, so ``import corrnet`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["MatchResult", "match_images"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from corrnet import match

        return getattr(match, name)
    raise AttributeError(f"module 'corrnet' has no attribute {name!r}")
