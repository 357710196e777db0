"""corrnet: learned correspondence pruning and relative pose for two-view geometry.

``corrnet.match_images(img1, img2, K1, K2)`` -> :class:`corrnet.match.MatchResult` is the
one-call pose of two images; ``corrnet.Verifier().verify(kpts1, kpts2, K1, K2, ...)`` ->
:class:`corrnet.verifier.Verification` verifies matches you already have.  Both are imported
on first use, so ``import corrnet`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "MatchResult": "corrnet.match",
    "match_images": "corrnet.match",
    "Verification": "corrnet.verifier",
    "Verifier": "corrnet.verifier",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'corrnet' has no attribute {name!r}")
