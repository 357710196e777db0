"""``python -m corrnet COMMAND [ARGS]`` is the ``corrnet`` console command."""

import sys

from corrnet.cli import main

sys.exit(main(prog="corrnet"))
