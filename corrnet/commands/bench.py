"""Network speed and memory against OpenCV RANSAC / MAGSAC and a dense graph Laplacian.

    corrnet bench [--config model/default ...] [--n 1000 2000 4000 8000 16000]
        [--batch 1 32] [--device cpu [cuda]] [--dtype float32 bfloat16] [--compile]
        [--profile] [--threads T] [--quick] [--out bench.json]
(``python benchmarks/bench_network.py`` is the same command.)  ``--config NAME`` without a
suffix is a shipped config (``model/default``, ``model/tiny``, ``demo``, ...).

Every row is one (model, device, dtype, N, batch, eager / compiled): the network alone in
eval mode under ``torch.inference_mode`` (through
:func:`corrnet.models.inference.make_predictor`, inputs already on the device and not
checked: ``validate=False``) on synthetic pairs (``corrnet.datasets.generate_pair``, seed 0),
timed as the median and the best of repeated calls after one warm-up call (three for a
compiled row: CUDA graphs are recorded on the first calls), divided by the batch size; CUDA
timers synchronise before reading the clock.  ``--compile`` adds a compiled row
(``torch.compile(mode="reduce-overhead")``: CUDA graphs on CUDA) after each eager one, with
its speed-up over the eager row measured in the same process (``x eager``).  ``--profile``
prints, per row, the kernels one forward pass launches (CUDA kernels; aten ops on the CPU)
and the ops taking the most time (``torch.profiler``).  Repeats adapt to the cost
(``--target-s`` of timed calls per row, between ``--min-repeats`` and ``--repeats``); a row
whose cost, extrapolated quadratically in N from the last measured row, exceeds
``--budget-s`` is printed "skipped".

Peak memory is the extra memory of one forward pass over the model and its input: on CUDA
``torch.cuda.max_memory_allocated`` (tensors only); on the CPU the rise of the peak resident
set size (VmHWM, reset through /proc/self/clear_refs) in a fresh interpreter that built the
model and input and ran one warm-up call at N = 64, so it counts everything the process
touches (allocator slack, thread stacks) and no memory left over from other rows; n/a where
/proc is unavailable.

Baselines, measured in the same process on the same pairs: ``cv2.findEssentialMat`` with
RANSAC and USAC_MAGSAC as corrnet's evaluation runs them (normalised coordinates, identity K,
threshold 1e-3, prob 0.999, at most 1000 iterations, seeded; median over ``--pairs`` pairs,
one call each, OpenCV limited to the same threads as torch), and the graph layer's
L x with the dense N×N Laplacian L = D^-1/2 (a aᵀ + I) D^-1/2 against the O(N·C) form the
model uses (batch 1, float32, C = model width).  ``net/RANSAC`` is the network's median ms
per pair over RANSAC's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from corrnet.arguments import count, match_count, seconds
from corrnet.commands import config_path
from corrnet.constants import BENCH_DTYPES
from corrnet.errors import run_command


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    """Parse the command line (see the module docstring); --device, --n and --threads get
    their defaults here."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        type=lambda value: Path(config_path(value)),
        nargs="+",
        default=[Path(config_path("model/default"))],
        help="model YAMLs, or training configs (their model.net is used); a name without "
        "suffix is a shipped config (default model/default)",
    )
    parser.add_argument(
        "--n", type=match_count, nargs="+", help="matches per pair (default 1000 ... 16000)"
    )
    parser.add_argument("--batch", type=count, nargs="+", default=[1, 32], help="batch sizes")
    parser.add_argument("--device", nargs="+", help="default: cpu, and cuda when available")
    parser.add_argument(
        "--dtype",
        nargs="+",
        choices=sorted(BENCH_DTYPES),
        help="default: float32 on the CPU, float32 and bfloat16 on CUDA",
    )
    parser.add_argument(
        "--compile", action="store_true", help="add compiled rows (mode=reduce-overhead)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="kernels per forward pass and the top ops"
    )
    parser.add_argument(
        "--threads", type=count, help="torch and OpenCV threads (default: all cores)"
    )
    parser.add_argument("--pairs", type=count, default=4, help="synthetic pairs per N")
    parser.add_argument("--repeats", type=count, default=20, help="most timed calls per row")
    parser.add_argument("--min-repeats", type=count, default=3, help="fewest timed calls per row")
    parser.add_argument("--target-s", type=seconds, default=2.0, help="timed seconds per row")
    parser.add_argument(
        "--budget-s",
        type=seconds,
        default=30.0,
        help="skip a row whose warm-up and fewest repeats would take longer",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument(
        "--quick", action="store_true", help="N 1000 2000 4000, 2 pairs, 0.5 s per row, 5 s budget"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    from corrnet.benchmark import available_cores

    if args.quick:
        args.pairs, args.target_s, args.budget_s = 2, 0.5, 5.0
    args.n = args.n or ([1000, 2000, 4000] if args.quick else [1000, 2000, 4000, 8000, 16000])
    args.device = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if args.threads is None:
        args.threads = available_cores()
    return args


def main(argv: Sequence[str] | None = None, prog: str = "corrnet bench") -> int:
    """Measure, print the table and (with --out) write the JSON; returns the exit status."""
    args = parse_args(argv, prog)
    import torch

    from corrnet.benchmark import measure, probe_job

    if args.probe:
        job = json.loads(args.probe)
        torch.set_num_threads(job["threads"])
        print(json.dumps(probe_job(job)))
        return 0
    return run_command(prog, lambda: measure(args))


if __name__ == "__main__":  # the memory probes run here (run_probe)
    sys.exit(main())
