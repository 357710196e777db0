"""Relative-pose evaluation of corrnet and classical baselines on the same pairs.

    corrnet eval --data PATH [--checkpoint CKPT] [--out DIR] [--workers W] [--max-pairs K]
                 [--viz K] [--methods corrnet corrnet+poselib ...] [--poselib-threshold PX]
                 [--seed S] [--overwrite] [--num-features K] [--detector D]
                 [--device cpu|cuda] [--batch-size B]
(``python eval.py`` is the same command.)

PATH: an OANet-format HDF5 file, ``synthetic`` (the synthetic test split), or a folder of
raw sequences in OANet's YFCC layout (prepared once into ``--cache``, under a name keyed by
the content of its pairs, images and calibration, the keypoint count ``--num-features``
(default 2000) and the detector ``--detector`` (default sift)).  Without ``--out`` the report
goes to a fresh folder runs/eval/<data name>[-k] under the current directory; an explicit ``--out``
that already holds a report is refused unless ``--overwrite``.  Methods: ``corrnet`` (robust
pose from the network's weights, no RANSAC), ``corrnet-8pt`` (its plain weighted eight-point) and
``<subset>+<estimator>`` with subset ``corrnet`` (kept matches), ``ratio`` (ratio < 0.8) or
none (all matches) and estimator ``ransac``, ``magsac`` (OpenCV, threshold 1e-3 normalised) or
``poselib`` (PoseLib LO-RANSAC, threshold ``--poselib-threshold`` pixels), every one seeded
with ``--seed`` (default 1234) before each estimate; see corrnet.eval.evaluate.

A 3-D pairs file (``corrnet prepare3d``) is recognised by its layout and evaluated for
registration instead (default weights ``corrnet/pretrained/corrnet-registration.pt``):
``corrnet`` (the network's weighted Kabsch), ``corrnet+ransac``, ``ransac`` and ``fgr``
(Open3D); see corrnet.eval.registration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from corrnet.arguments import add_detector, add_keypoint_count, pixel_threshold, seed
from corrnet.constants import POSELIB_THRESHOLD, SEED
from corrnet.errors import UserError, run_command
from corrnet.tasks import TASKS, Task, default_task, task_of_file

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from corrnet.eval.evaluate import Predictor


def _methods_help() -> str:
    """--methods' help: each task's methods, and those that need no network."""
    need_none = (m for t in TASKS.values() for m in t.methods if m not in t.network_methods)
    return (
        "default: all of the data's task: "
        + "; ".join(f"{t.pairs}: {' '.join(t.methods)}" for t in TASKS.values())
        + f"; {' '.join(dict.fromkeys(need_none))} need no network"
    )


def _parse(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", required=True, help="OANet HDF5 file, 'synthetic', or a raw folder"
    )
    parser.add_argument("--checkpoint", help="corrnet checkpoint (default: the shipped weights)")
    parser.add_argument(
        "--out", type=Path, help="report folder (default: a fresh runs/eval/<data>)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a report in --out")
    parser.add_argument(
        "--workers", type=int, help="robust-estimation processes (default: all cores)"
    )
    parser.add_argument("--max-pairs", type=int, help="evaluate the first K pairs only")
    parser.add_argument(
        "--viz", type=int, default=0, metavar="K", help="render the K worst and K best pairs"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=tuple(dict.fromkeys(m for t in TASKS.values() for m in t.methods)),
        metavar="METHOD",
        help=_methods_help(),
    )
    parser.add_argument(
        "--poselib-threshold",
        type=pixel_threshold,
        default=POSELIB_THRESHOLD,
        metavar="PX",
        help="PoseLib's max_epipolar_error in pixels (default %(default)s; the "
        "OpenCV estimators use 1e-3 in normalised coordinates)",
    )
    parser.add_argument(
        "--seed",
        type=seed,
        default=SEED,
        metavar="S",
        help="RANSAC seed of every two-view estimator, set before each estimate "
        "(default %(default)s); other seeds show how much a score owes to sampling",
    )
    parser.add_argument(
        "--synthetic-pairs", type=int, default=1000, help="size of the synthetic split"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("data/generated"),
        help="where a raw folder is prepared into HDF5 (default: %(default)s)",
    )
    add_keypoint_count(
        parser,
        None,
        "keypoints per image when --data is a raw folder (default 2000, as data/prepare.py)",
    )
    add_detector(parser, None, "when --data is a raw folder")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="the network's")
    parser.add_argument(
        "--batch-size", type=int, default=1, metavar="B", help="pairs per network call (padded)"
    )
    parser.add_argument(
        "--symmetric",
        action="store_true",
        help="two-view: average the network's scores of both image orders (twice the network time)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    import torch

    from corrnet.eval.estimators import make_estimators

    args.prog = prog  # the name in warnings
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: no CUDA device available to torch {torch.__version__}")
    for name in ("workers", "max_pairs", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive number")
    if args.viz < 0:
        parser.error("--viz: expected K >= 0")
    if args.synthetic_pairs < 1:
        parser.error("--synthetic-pairs: expected a positive number")
    try:
        args.estimators = make_estimators(args.seed, args.poselib_threshold)
    except ValueError as error:
        parser.error(f"--{error}")
    return args


def _hdf5_of_raw_folder(
    folder: Path,
    cache: Path,
    workers: int | None,
    num_features: int | None = None,
    detector: str | None = None,
) -> Path:
    """Prepare (once) the putative matches of a raw folder with ``num_features`` keypoints
    of ``detector`` per image (None: the defaults); returns the cached HDF5 path, named by the
    digest of the pairs' content (pairs.txt, images.txt, images, calibration) and the protocol
    (with the detector and the count)."""
    from corrnet.datasets.prepare import (
        DEFAULT_DETECTOR,
        NUM_FEATURES,
        find_sequences,
        inputs_digest,
        prepare,
        read_sequence,
    )

    count = NUM_FEATURES if num_features is None else num_features
    detector = detector or DEFAULT_DETECTOR
    pairs = [p for seq in find_sequences(folder) for p in read_sequence(seq)]
    digest = inputs_digest(pairs, count, detector)
    out = cache / f"{folder.resolve().name}-{digest[:12]}.hdf5"
    prepare(pairs, out, workers or 2, num_features=count, detector=detector)
    return out


def _dataset(args: argparse.Namespace, side_info: Sequence[str], task: Task) -> tuple[Dataset, str]:
    """The dataset of ``task`` named by --data and its name for the report
    (:func:`corrnet.datasets.factory.open_dataset`)."""
    from torch.utils.data import Subset

    from corrnet.datasets.factory import data_path, open_dataset

    data = data_path(args.data)
    if data is not None and data.is_dir():
        name = data.resolve().name
        data = _hdf5_of_raw_folder(data, args.cache, args.workers, args.num_features, args.detector)
    elif args.num_features is not None or args.detector is not None:
        option = "--num-features" if args.num_features is not None else "--detector"
        raise UserError(
            f"{option}: only with a raw folder as --data (the keypoints of {args.data} "
            f"are already extracted)"
        )
    else:
        name = "synthetic-test" if data is None else data.stem
    dataset = open_dataset(
        args.data if data is None else str(data),
        "test",
        side_info=side_info,
        synthetic_pairs=args.synthetic_pairs,
        task=task,
    )
    if args.max_pairs is not None and args.max_pairs < len(dataset):
        dataset = Subset(dataset, range(args.max_pairs))
    return dataset, name


def _report(
    args: argparse.Namespace, out: Path, result, summary: dict, render: Callable[[], None]
) -> int:
    """Print the table; with --viz, the pictures (exit 1 where they fail, 0 otherwise)."""
    from corrnet.eval.report import format_table

    print(f"{result.dataset}: {summary['pairs']} pairs; accuracies, precision/recall/F1 in %\n")
    print(format_table(summary))
    print(f"\nreport: {out}")
    if args.viz:
        try:
            render()
        except (ImportError, RuntimeError) as err:
            print(f"{args.prog}: --viz skipped: {err}", file=sys.stderr)
            return 1
        print(f"pictures: {out / 'viz'}")
    return 0


def _network(
    args: argparse.Namespace, task: Task
) -> tuple[Sequence[str], Predictor | None, tuple[str, ...]]:
    """The methods of --methods (default: all of ``task``'s), and the predictor and input
    channels of the weights they need (None, () when no method needs the network).  UserError
    for a method or weights of another task."""
    from corrnet.checkpoint import load_model
    from corrnet.models import make_predictor

    methods = args.methods or task.methods
    wrong = [m for m in methods if m not in task.methods]
    if wrong:
        owner = next((t for t in TASKS.values() if set(wrong) <= set(t.methods)), None)
        what = f"{owner.label} methods" if owner else "methods of different tasks"
        raise UserError(
            f"--methods: {wrong} are {what}; {args.data} holds {task.pairs}, which take "
            f"{list(task.methods)}"
        )
    if not any(m in task.network_methods for m in methods):
        return methods, None, ()
    weights = args.checkpoint or task.default_weights()
    model = load_model(weights)
    if model.config.task.name != task.name:
        raise UserError(
            f"{weights}: a {model.config.task.label} network (model.net.geometry "
            f"{model.config.geometry!r}); {task.pairs} need a {task.label} one"
        )
    predictor = make_predictor(model.to(args.device), symmetric=args.symmetric)
    return methods, predictor, model.config.channels


def main(argv: Sequence[str] | None = None, prog: str = "corrnet eval") -> int:
    """Evaluate, print the table and write the report; bad input ends with one line, exit 2."""
    args = _parse(argv, prog)

    def run() -> int:
        from corrnet.datasets.factory import data_path
        from corrnet.eval.report import check_out_dir, fresh_dir, write_report

        out = check_out_dir(args.out, args.overwrite) if args.out else None
        data = data_path(args.data)
        task = task_of_file(data) if data is not None and data.is_file() else default_task()
        methods, predictor, side_info = _network(args, task)
        dataset, name = _dataset(args, side_info, task)
        out = out or fresh_dir(Path("runs/eval") / name)
        result = task.evaluate(dataset, predictor, methods, args, name)
        summary = write_report(result, out, args.overwrite)
        return _report(
            args, out, result, summary, lambda: task.render(out / "viz", dataset, result, args.viz)
        )

    return run_command(prog, run)
