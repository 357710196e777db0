"""Evaluation reports: a terminal table, ``report.json``, ``report.md`` and ``per_pair.csv``.

``report.json``::

    {"dataset": str, "pairs": int,
     "methods": {name: {"mAP5", "mAP10", "mAP20", "auc5", "auc10", "auc20",
                        "precision", "recall", "f1", "ms_per_pair"}}}

Accuracies are fractions in [0, 1]; ``precision`` and ``recall`` are means over pairs and
``f1`` = 2PR / (P + R) of those means; ``ms_per_pair`` is the mean wall time in ms.
``per_pair.csv`` has one row per pair and method: pair (the sample index), method, err_R,
err_t, err (degrees), precision, recall, ms.  A folder that already holds a report is never
written into unless ``overwrite``; every file is written to a temporary file and renamed.

A 3-D registration evaluation (:class:`~corrnet.eval.registration.RegEvalResult`) writes the
same three files: ``report.json`` as :func:`~corrnet.eval.registration.summarize_registration`
documents it (``"kind": "registration"``), and ``per_pair.csv`` with pair, method, err_R
(degrees), err_t (metres), success (0/1), precision, recall, ms.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from corrnet.atomic import atomic_path

from .evaluate import EvalResult
from .metrics import oanet_map, pose_auc
from .registration import COLUMNS as REGISTRATION_COLUMNS
from .registration import RegEvalResult, summarize_registration

REPORT_FILES = ("report.json", "report.md", "per_pair.csv")
COLUMNS = (
    "mAP5",
    "mAP10",
    "mAP20",
    "auc5",
    "auc10",
    "auc20",
    "precision",
    "recall",
    "f1",
    "ms_per_pair",
)


def summarize(result: EvalResult) -> dict:
    """The ``report.json`` dictionary of ``result`` (see the module docstring)."""
    methods = {}
    for method in result.methods:
        rows = result.of(method)
        precision = float(np.mean([r.precision for r in rows]))
        recall = float(np.mean([r.recall for r in rows]))
        errors = [r.err for r in rows]
        methods[method] = {
            **oanet_map(errors),
            **pose_auc(errors),
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
            "ms_per_pair": float(np.mean([r.ms for r in rows])),
        }
    return {"dataset": result.dataset, "pairs": result.pairs, "methods": methods}


UNSCALED = ("ms_per_pair", "rotation_error_deg", "translation_error_cm")
"""Columns printed as they are; the others are fractions printed in %."""


def _cell(column: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if column in UNSCALED else f"{100 * value:.1f}"


def format_table(summary: dict, markdown: bool = False) -> str:
    """The summary as a table: accuracies in %, time in ms per pair (registration: recall,
    precision, recall, F1 in %, errors in degrees and cm)."""
    columns = REGISTRATION_COLUMNS if summary.get("kind") == "registration" else COLUMNS
    header = ["method", *(c if c in UNSCALED else f"{c} %" for c in columns)]
    rows = [
        [name, *(_cell(c, m.get(c)) for c in columns)] for name, m in summary["methods"].items()
    ]
    if markdown:
        lines = [header, ["---"] + ["---:"] * len(columns), *rows]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    fmt = lambda line: "  ".join(
        s.ljust(w) if i == 0 else s.rjust(w) for i, (s, w) in enumerate(zip(line, widths))
    )
    return "\n".join([fmt(header), *(fmt(r) for r in rows)])


def _markdown(summary: dict) -> str:
    if summary.get("kind") == "registration":
        return (
            f"# Registration: {summary['dataset']}\n\n"
            f"{summary['pairs']} pairs. A pair is registered "
            f"when its rotation error is < 15° and its translation error < 30 cm (3DMatch, as "
            f"PointDSC reports); errors are means over the registered pairs. Recall, precision, "
            f"recall and F1 in %, time in ms per pair.\n\n{format_table(summary, markdown=True)}\n"
        )
    return (
        f"# Relative pose: {summary['dataset']}\n\n{summary['pairs']} pairs. mAP = OANet's mean "
        f"of accuracies at 5° steps; auc = area under the error curve (SuperGlue). "
        f"Accuracies, precision, recall and F1 in %, time in ms per pair.\n\n"
        f"{format_table(summary, markdown=True)}\n"
    )


def _csv(result: EvalResult | RegEvalResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if isinstance(result, RegEvalResult):
        writer.writerow(
            ["pair", "method", "err_R", "err_t", "success", "precision", "recall", "ms"]
        )
        for method in result.methods:
            for r in result.of(method):
                writer.writerow(
                    [
                        r.index,
                        method,
                        f"{r.err_R:.6g}",
                        f"{r.err_t:.6g}",
                        int(r.success),
                        f"{r.precision:.6g}",
                        f"{r.recall:.6g}",
                        f"{r.ms:.4g}",
                    ]
                )
        return buffer.getvalue()
    writer.writerow(["pair", "method", "err_R", "err_t", "err", "precision", "recall", "ms"])
    for method in result.methods:
        for r in result.of(method):
            writer.writerow(
                [
                    r.index,
                    method,
                    f"{r.err_R:.6g}",
                    f"{r.err_t:.6g}",
                    f"{r.err:.6g}",
                    f"{r.precision:.6g}",
                    f"{r.recall:.6g}",
                    f"{r.ms:.4g}",
                ]
            )
    return buffer.getvalue()


def _report_files_in(folder: Path) -> list[str]:
    """The names of :data:`REPORT_FILES` that already exist in ``folder``."""
    return [name for name in REPORT_FILES if (folder / name).exists()]


def check_out_dir(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """``out`` as a Path; FileExistsError if it already holds a report and not ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    existing = _report_files_in(out)
    if existing and not overwrite:
        raise FileExistsError(
            f"{out}: already holds a report ({', '.join(existing)}); choose "
            f"another folder or pass --overwrite"
        )
    return out


def fresh_dir(base: str | os.PathLike) -> Path:
    """``base`` if it holds no report, else the first free ``base-2``, ``base-3``, ..."""
    base = Path(base)
    candidate, k = base, 1
    while _report_files_in(candidate):
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def write_report(
    result: EvalResult | RegEvalResult, out: str | os.PathLike, overwrite: bool = False
) -> dict:
    """Write report.json, report.md and per_pair.csv into ``out``; return the summary.

    Raises FileExistsError when ``out`` already holds a report and ``overwrite`` is False.
    """
    out = check_out_dir(out, overwrite)
    summary = (
        summarize_registration(result) if isinstance(result, RegEvalResult) else summarize(result)
    )
    for name, text in (
        ("per_pair.csv", _csv(result)),
        ("report.md", _markdown(summary)),
        ("report.json", json.dumps(summary, indent=2) + "\n"),
    ):
        with atomic_path(out / name) as tmp:  # creates out if needed
            tmp.write_text(text, encoding="utf-8")
    return summary
