#!/usr/bin/env python
"""Train CorrNet with Lightning.  ``python train.py --config configs/synthetic.yaml --help``."""

import sys

from corrnet.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
