#!/usr/bin/env python
"""``python data/synthetic.py ARGS`` is ``corrnet synthetic ARGS``."""

import sys

from corrnet.commands.synthetic import main

if __name__ == "__main__":
    sys.exit(main(prog="synthetic.py"))
