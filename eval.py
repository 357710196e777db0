#!/usr/bin/env python
"""``python eval.py ARGS`` is ``corrnet eval ARGS``."""

import sys

from corrnet.commands.eval import main

if __name__ == "__main__":
    sys.exit(main(prog="eval.py"))
