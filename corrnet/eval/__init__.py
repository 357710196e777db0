"""Relative-pose evaluation: metrics, estimators and reports."""
