#!/usr/bin/env python
"""``python benchmarks/bench_network.py ARGS`` is ``corrnet bench ARGS``."""

import sys

from corrnet.commands.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="bench_network.py"))
