"""``python -m corrnet.visualization ARGS`` is ``corrnet viz ARGS``."""

import sys

from corrnet.commands.viz import main

sys.exit(main(prog="python -m corrnet.visualization"))
