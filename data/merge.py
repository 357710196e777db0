#!/usr/bin/env python
"""``python data/merge.py ARGS`` is ``corrnet merge ARGS``."""

import sys

from corrnet.commands.merge import main

if __name__ == "__main__":
    sys.exit(main(prog="merge.py"))
