#!/usr/bin/env python
"""``python train.py ARGS`` is ``corrnet train ARGS``."""

import sys

from corrnet.commands.train import main

if __name__ == "__main__":
    sys.exit(main(prog="train.py"))
