#!/usr/bin/env python
"""``python data/prepare3d.py ARGS`` is ``corrnet prepare3d ARGS``."""

import sys

from corrnet.commands.prepare3d import main

if __name__ == "__main__":
    sys.exit(main(prog="prepare3d.py"))
