"""The names the README tells users to import are what it says they are."""

from __future__ import annotations

import inspect

import corrnet.eval
import corrnet.models


def test_eval_package_exports_the_functions():
    from corrnet.eval import evaluate, write_report
    from corrnet.eval.evaluate import METHODS  # the module stays importable by its path

    assert inspect.isfunction(evaluate) and evaluate.__module__ == "corrnet.eval.evaluate"
    assert inspect.isfunction(write_report) and "corrnet" in METHODS
    assert corrnet.eval.evaluate is evaluate


def test_every_exported_name_exists():
    for package in (corrnet.eval, corrnet.models):
        assert all(hasattr(package, name) for name in package.__all__), package.__name__
    from corrnet.models import CorrNet, CorrNetConfig, InferenceModel, make_predictor

    assert isinstance(
        make_predictor(CorrNet(CorrNetConfig(width=16, heads=2, num_states=2, blocks_per_stage=2))),
        InferenceModel,
    )
