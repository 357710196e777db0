#!/usr/bin/env python
"""``python data/prepare.py ARGS`` is ``corrnet prepare ARGS``."""

import sys

from corrnet.commands.prepare import main

if __name__ == "__main__":
    sys.exit(main(prog="prepare.py"))
