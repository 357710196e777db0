#!/usr/bin/env python
"""``python train.py ARGS`` is ``corrnet train ARGS``."""

import sys

from corrnet.helpcache import cached_help

if __name__ == "__main__":
    status = cached_help(sys.argv[1:], "train.py")  # plain --help: from the cache
    if status is None:
        from corrnet.commands.train import main

        status = main(prog="train.py")
    sys.exit(status)
