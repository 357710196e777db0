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

from corrnet.arguments import add_detector, pixel_threshold
from corrnet.constants import (
    BASELINES,
    METHODS,
    NETWORK_METHODS,
    POSELIB_THRESHOLD,
    REGISTRATION_METHODS,
    REGISTRATION_NETWORK_METHODS,
    SEED,
)
from corrnet.errors import UserError, run_command

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from corrnet.eval.evaluate import EvalResult, Predictor

VIZ_METHOD = "corrnet+poselib"
"""Pairs for --viz are ranked by this method's error (else by the first method evaluated)."""


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
        choices=tuple(dict.fromkeys(METHODS + REGISTRATION_METHODS)),
        metavar="METHOD",
        help=f"default: all of {' '.join(METHODS)}; {' '.join(BASELINES)} "
        f"need no network (3-D pairs: {' '.join(REGISTRATION_METHODS)})",
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
        type=int,
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
    parser.add_argument(
        "--num-features",
        type=int,
        metavar="K",
        help="keypoints per image when --data is a raw folder (default 2000, as data/prepare.py)",
    )
    add_detector(parser, None, "when --data is a raw folder")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="the network's")
    parser.add_argument(
        "--batch-size", type=int, default=1, metavar="B", help="pairs per network call (padded)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    import torch

    from corrnet.eval.estimators import make_estimators

    args.prog = prog  # the name in warnings
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: no CUDA device available to torch {torch.__version__}")
    for name in ("workers", "max_pairs", "num_features", "batch_size"):
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


def _dataset(
    args: argparse.Namespace, side_info: Sequence[str], geometry: str = "two_view"
) -> tuple[Dataset, str]:
    """The dataset named by --data and its name for the report; ``geometry="rigid"`` for a
    3-D pairs file (:func:`corrnet.datasets.factory.open_dataset`)."""
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
        geometry=geometry,
    )
    if args.max_pairs is not None and args.max_pairs < len(dataset):
        dataset = Subset(dataset, range(args.max_pairs))
    return dataset, name


def _render(args: argparse.Namespace, out: Path, dataset: Dataset, result: EvalResult) -> None:
    """PNGs of the K worst and K best pairs under out/viz/."""
    from corrnet.visualization import render_pair

    method = VIZ_METHOD if VIZ_METHOD in result.methods else result.methods[0]
    rows = sorted(result.of(method), key=lambda r: r.err)
    for kind, chosen in (("worst", rows[::-1][: args.viz]), ("best", rows[: args.viz])):
        for rank, r in enumerate(chosen, 1):
            sample = dataset[r.position]
            image = {key: sample.get(key) for key in ("image1", "image2")}
            render_pair(
                out / "viz" / f"{kind}-{rank:02d}-pair{r.index}.png",  # creates viz/
                sample["xs"].numpy(),
                sample["labels"].numpy() > 0.5,
                r.selected,
                title=f"{method}, pair {r.index} ({kind} {rank})",
                pose_error_deg=r.err,
                K1=sample["K1"].numpy(),
                K2=sample["K2"].numpy(),
                **image,
            )


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


def _render_registration(args: argparse.Namespace, out: Path, dataset: Dataset, result) -> None:
    """PNGs of the K worst and K best 3-D pairs under out/viz/."""
    from torch.utils.data import Subset

    from corrnet.visualization.registration import render_registration_pairs

    pairs = dataset.dataset if isinstance(dataset, Subset) else dataset  # the Pairs3D
    render_registration_pairs(out / "viz", pairs, result, args.viz)


def _network(
    args: argparse.Namespace, geometry: str
) -> tuple[Sequence[str], Predictor | None, tuple[str, ...]]:
    """The methods of --methods (default: all for ``geometry``, "rigid" for a 3-D pairs file,
    else "two_view"), and the predictor and input channels of the weights they need (None, ()
    when no method needs the network).  ValueError for a method or weights of the other
    geometry."""
    from corrnet.checkpoint import PRETRAINED, PRETRAINED_REGISTRATION, load_model
    from corrnet.models import make_predictor

    rigid = geometry == "rigid"
    known, network = (
        (REGISTRATION_METHODS, REGISTRATION_NETWORK_METHODS)
        if rigid
        else (METHODS, NETWORK_METHODS)
    )
    methods = args.methods or known
    wrong = [m for m in methods if m not in known]
    if wrong:
        raise UserError(
            f"--methods: {wrong} are two-view methods; a 3-D pairs file takes {list(known)}"
            if rigid
            else f"--methods: {wrong} are 3-D registration methods; {args.data} "
            f"is not a 3-D pairs file"
        )
    if not any(m in network for m in methods):
        return methods, None, ()
    weights = args.checkpoint or (PRETRAINED_REGISTRATION if rigid else PRETRAINED)
    model = load_model(weights)
    if model.config.geometry != geometry:
        raise UserError(
            f"{weights}: a {'two-view' if rigid else 'rigid'} network (model.net.geometry "
            f"{model.config.geometry!r}); {'3-D' if rigid else 'two-view'} pairs need a "
            f"{'rigid' if rigid else 'two-view'} one"
        )
    return methods, make_predictor(model.to(args.device)), model.config.channels


def main(argv: Sequence[str] | None = None, prog: str = "corrnet eval") -> int:
    """Evaluate, print the table and write the report; bad input ends with one line, exit 2."""
    args = _parse(argv, prog)

    def run() -> int:
        from corrnet.datasets.factory import data_path
        from corrnet.datasets.pairs3d import is_pairs3d
        from corrnet.eval import registration
        from corrnet.eval.evaluate import check_inputs, evaluate
        from corrnet.eval.report import check_out_dir, fresh_dir, write_report

        out = check_out_dir(args.out, args.overwrite) if args.out else None
        data = data_path(args.data)
        geometry = (
            "rigid" if data is not None and data.is_file() and is_pairs3d(data) else "two_view"
        )
        methods, predictor, side_info = _network(args, geometry)
        dataset, name = _dataset(args, side_info, geometry)
        out = out or fresh_dir(Path("runs/eval") / name)
        if geometry == "rigid":
            result = registration.evaluate_registration(
                dataset, predictor, methods, progress=not args.quiet, dataset=name
            )
            render = _render_registration
        else:
            check_inputs(dataset, methods, args.estimators)
            result = evaluate(
                dataset,
                predictor,
                methods,
                workers=args.workers,
                progress=not args.quiet,
                dataset=name,
                estimators=args.estimators,
                batch_size=args.batch_size,
            )
            render = _render
        summary = write_report(result, out, args.overwrite)
        return _report(args, out, result, summary, lambda: render(args, out, dataset, result))

    return run_command(prog, run)
