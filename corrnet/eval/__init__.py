"""Relative-pose and 3-D registration evaluation: metrics, estimators and reports.

``from corrnet.eval import evaluate`` is the function (it shadows the submodule's name as an
attribute of this package; ``from corrnet.eval.evaluate import ...`` still reads the module).
"""

from .evaluate import evaluate
from .metrics import oanet_map, pose_auc
from .registration import evaluate_registration
from .report import write_report

__all__ = ["evaluate", "evaluate_registration", "oanet_map", "pose_auc", "write_report"]
