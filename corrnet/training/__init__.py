"""Lightning training: the module, the data module and the command line."""

from .datamodule import CorrNetDataModule
from .module import CorrNetModule

__all__ = ["CorrNetDataModule", "CorrNetModule"]
