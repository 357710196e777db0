"""Visualisation of correspondence pruning for one image pair (Open3D, rendered off-screen).

:func:`render_pair` writes a PNG with the matches drawn between the two images (or their
keypoint clouds), coloured by outcome (TP / FP / FN), the matches embedded in 3-D, and a
caption with counts, precision, recall and pose error.  :func:`show_pair` opens the same
scene in an interactive window.  Open3D runs in a subprocess, so a missing Vulkan driver
raises a RuntimeError instead of aborting the caller.  :func:`render_registration` draws a
3-D registration: both clouds before and after, and the kept matches.
"""

from .registration import render_registration
from .render import render_pair, show_pair

__all__ = ["render_pair", "render_registration", "show_pair"]
