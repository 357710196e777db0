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
L x with the notes' dense N×N Laplacian against the O(N·C) form the model uses (batch 1,
float32, C = model width).  ``net/RANSAC`` is the network's median ms per pair over RANSAC's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

import corrnet
from corrnet.atomic import atomic_path
from corrnet.commands import config_path
from corrnet.datasets import generate_pair
from corrnet.errors import run_command
from corrnet.eval.estimators import MAX_ITERS, OPENCV_METHODS, PROB, SEED, THRESHOLD
from corrnet.models import CorrNet, CorrNetConfig, laplacian_aggregate
from corrnet.models.inference import make_predictor

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PROBE_WARMUP_N = 64
"""Matches of the warm-up call before a CPU memory probe (thread pools, kernel caches)."""


def load_net_config(path: Path) -> dict:
    """CorrNetConfig fields from a model YAML or from a training config's ``model.net``,
    checked (an unknown key or bad value names the file)."""
    config = yaml.safe_load(path.read_text())
    config = config["model"]["net"] if "model" in config else config
    return CorrNetConfig.from_dict(config, str(path)).to_dict()


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def dense_laplacian(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Baseline: the notes' L = D^-1/2 (a aᵀ + I) D^-1/2 as an N×N matrix, then L x.

    x (B, C, N, 1), w (B, N) -> (B, C, N, 1); O(N²) time and memory.
    """
    a = torch.relu(torch.tanh(w)).unsqueeze(-1)
    A = a @ a.transpose(1, 2) + torch.eye(w.shape[1], dtype=x.dtype, device=x.device)
    d = A.sum(-1).rsqrt()
    L = d.unsqueeze(-1) * A * d.unsqueeze(-2)
    return (L @ x.squeeze(-1).transpose(1, 2)).transpose(1, 2).unsqueeze(-1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[int], object], device: torch.device, repeats: int) -> list[float]:
    """Wall times in ms of fn(0), ..., fn(repeats - 1), each synchronised."""
    times = []
    for i in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn(i)
        synchronize(device)
        times.append(1e3 * (time.perf_counter() - start))
    return times


def adaptive_timing(
    fn: Callable[[int], object], device: torch.device, args: argparse.Namespace, warmup: int = 1
) -> dict:
    """``warmup`` calls, then repeats filling about ``--target-s``: median / best ms per call
    (``first_ms``: the first call, with any compilation)."""
    first = time_calls(fn, device, 1)[0]
    time_calls(fn, device, warmup - 1)
    repeats = int(min(args.repeats, max(args.min_repeats, args.target_s * 1e3 // max(first, 1e-3))))
    times = time_calls(fn, device, repeats)
    return {
        "median_ms": statistics.median(times),
        "best_ms": min(times),
        "repeats": repeats,
        "first_ms": first,
    }


# --------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)[1])


def cpu_peak_mib(fn: Callable[[], object]) -> float | None:
    """Rise of the peak resident set over the current one while fn() runs, MiB (Linux only)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _status_kib("VmRSS")
    except OSError:
        return None
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def cuda_peak_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Extra CUDA memory allocated at the peak of fn() over what was allocated before, MiB."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def probe_job(job: dict) -> float | None:
    """Peak memory (MiB) of one job, run in this process: see :func:`run_probe`."""
    device = torch.device(job["device"])
    torch.manual_seed(0)
    if job["kind"] == "network":
        net = CorrNet(CorrNetConfig.from_dict(job["net"])).to(device)
        predict = make_predictor(net, DTYPES[job["dtype"]])
        x = torch.randn(job["batch"], job["n"], net.in_channels, device=device)
        predict(torch.randn(1, PROBE_WARMUP_N, net.in_channels, device=device))

        def fn() -> None:
            predict(x)

    else:
        x = torch.randn(1, job["width"], job["n"], 1, device=device)
        w = torch.randn(1, job["n"], device=device)
        layer = dense_laplacian if job["kind"] == "dense" else laplacian_aggregate
        layer(x[:, :, :PROBE_WARMUP_N], w[:, :PROBE_WARMUP_N])

        def fn() -> None:
            with torch.inference_mode():
                layer(x, w)

    return cuda_peak_mib(fn, device) if device.type == "cuda" else cpu_peak_mib(fn)


def run_probe(job: dict) -> float | None:
    """Peak memory of a job: in this process on CUDA, in a fresh interpreter on the CPU."""
    if job["device"] == "cuda":
        return probe_job(job)
    package_root = str(Path(corrnet.__file__).resolve().parents[1])  # this corrnet, also there
    path = os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))
    done = subprocess.run(
        [sys.executable, "-m", "corrnet.commands.bench", "--probe", json.dumps(job)],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


# --------------------------------------------------------------------------- baselines
def opencv_ms(xs: np.ndarray, estimator: str) -> float:
    """Time (ms) of one cv2.findEssentialMat on matches xs (N, 4), as corrnet.eval runs it."""
    p1, p2 = np.ascontiguousarray(xs[:, :2]), np.ascontiguousarray(xs[:, 2:])
    cv2.setRNGSeed(SEED)
    start = time.perf_counter()
    cv2.findEssentialMat(
        p1,
        p2,
        np.eye(3),
        method=OPENCV_METHODS[estimator],
        prob=PROB,
        threshold=THRESHOLD,
        maxIters=MAX_ITERS,
    )
    return 1e3 * (time.perf_counter() - start)


def laplacian_row(n: int, width: int, device: torch.device, args: argparse.Namespace) -> dict:
    """Dense vs O(N·C) graph Laplacian at N matches: time, peak memory, relative difference."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(1, width, n, 1, generator=g).to(device)
    w = torch.randn(1, n, generator=g).to(device)
    row: dict = {"n": n, "channels": width}
    with torch.inference_mode():
        for name, layer in (("fast", laplacian_aggregate), ("dense", dense_laplacian)):
            timing = adaptive_timing(lambda _, layer=layer: layer(x, w), device, args)
            row[f"{name}_ms"] = timing["median_ms"]
        ref = dense_laplacian(x.double(), w.double())
        row["rel_diff"] = float((laplacian_aggregate(x, w).double() - ref).norm() / ref.norm())
    if not args.no_memory:
        for name in ("fast", "dense"):
            row[f"{name}_mib"] = run_probe(
                {
                    "kind": name,
                    "device": device.type,
                    "n": n,
                    "width": width,
                    "threads": args.threads,
                }
            )
    return row


# --------------------------------------------------------------------------- network
def network_row(
    net: CorrNet,
    config: dict,
    features: torch.Tensor,
    batch: int,
    device: torch.device,
    dtype: str,
    args: argparse.Namespace,
    estimate_ms: float | None,
    compile: bool = False,
) -> dict:
    """Time (and peak memory) of the network on batches cycled from ``features`` (P, N, C),
    eager or compiled (:func:`make_predictor`'s ``compile``)."""
    pairs, n, _ = features.shape
    row: dict = {
        "n": n,
        "batch": batch,
        "device": device.type,
        "dtype": dtype,
        "mode": "compiled" if compile else "eager",
    }
    if estimate_ms is not None and estimate_ms * (1 + args.min_repeats) > 1e3 * args.budget_s:
        return {**row, "skipped": True, "estimated_ms_per_batch": estimate_ms}
    predict = make_predictor(net, DTYPES[dtype], compile=compile, validate=False)
    batches = [features[(torch.arange(batch) + i * batch) % pairs].to(device) for i in range(pairs)]
    warmup = 3 if compile else 1
    timing = adaptive_timing(lambda i: predict(batches[i % pairs]), device, args, warmup)
    if args.profile:
        row["profile"] = profile_forward(lambda: predict(batches[0]), device)
        if predict.compiled and device.type == "cpu":  # inductor's C++ kernels are no aten ops
            row["profile"]["kernels"] = None
    row.update(
        skipped=False,
        compiled=predict.compiled,
        first_ms=timing["first_ms"],
        repeats=timing["repeats"],
        ms_per_batch=timing["median_ms"],
        ms_per_pair=timing["median_ms"] / batch,
        best_ms_per_pair=timing["best_ms"] / batch,
        pairs_per_s=1e3 * batch / timing["median_ms"],
    )
    if not args.no_memory:
        row["peak_mib"] = run_probe(
            {
                "kind": "network",
                "device": device.type,
                "n": n,
                "batch": batch,
                "dtype": dtype,
                "net": config,
                "threads": args.threads,
            }
        )
    return row


def profile_forward(fn: Callable[[], object], device: torch.device, top: int = 8) -> dict:
    """One call of fn under ``torch.profiler``: the kernels it launches (CUDA kernels on
    CUDA; on the CPU the aten ops, each of which is one or more kernels) and the ``top`` ops
    by self time (ms)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    events = prof.events()
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        self_ms = lambda e: e.self_device_time_total / 1e3
    else:
        kernels = [e for e in events if e.name.startswith("aten::") and e.cpu_parent is None]
        self_ms = lambda e: e.self_cpu_time_total / 1e3
    totals: dict[str, float] = {}
    for e in events if device.type == "cpu" else kernels:
        if device.type == "cpu" and not e.name.startswith("aten::"):
            continue
        totals[e.name] = totals.get(e.name, 0.0) + self_ms(e)
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return {"kernels": len(kernels), "top_ms": [(name, round(ms, 3)) for name, ms in ranked]}


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found[1] if found else cpu
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cores_available": available_cores(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "load_average_start": os.getloadavg(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def cell(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def print_table(results: dict) -> None:
    head = (
        f"{'model':<18} {'dev':<4} {'dtype':<8} {'mode':<8} {'N':>6} {'B':>3} {'ms/pair':>9} "
        f"{'best':>8} {'pairs/s':>8} {'x eager':>7} {'peak MiB':>9} {'RANSAC':>8} {'MAGSAC':>8} "
        f"{'net/RANSAC':>10} "
        f"{'L dense ms':>10} {'L O(N) ms':>9} {'dense MiB':>9} {'O(N) MiB':>8}"
    )
    print(head)
    print("-" * len(head))
    base = {b["n"]: b for b in results["baselines"]}
    for r in results["network"]:
        lap = results["laplacian"].get(f"{r['device']}/{r['width']}/{r['n']}", {})
        b = base[r["n"]]
        failed = r["mode"] == "compiled" and not r.get("compiled", True)
        mode = "fallback" if failed else r["mode"]
        start = (
            f"{r['model']:<18} {r['device']:<4} {r['dtype']:<8} {mode:<8} {r['n']:>6} "
            f"{r['batch']:>3} "
        )
        if r["skipped"]:
            est = f"skipped (estimated {r['estimated_ms_per_batch'] / 1e3:.0f} s per call)"
            print(start + est)
            continue
        print(
            start + f"{cell(r['ms_per_pair'], 2):>9} {cell(r['best_ms_per_pair'], 2):>8} "
            f"{cell(r['pairs_per_s'], 0):>8} {cell(r.get('vs_eager'), 2):>7} "
            f"{cell(r.get('peak_mib')):>9} "
            f"{cell(b['ransac_ms']):>8} {cell(b['magsac_ms']):>8} "
            f"{cell(r['ms_per_pair'] / b['ransac_ms'], 2):>10} "
            f"{cell(lap.get('dense_ms'), 2):>10} {cell(lap.get('fast_ms'), 3):>9} "
            f"{cell(lap.get('dense_mib')):>9} {cell(lap.get('fast_mib')):>8}"
        )
    profiled = [r for r in results["network"] if "profile" in r]
    if profiled:
        print("\nkernels per forward pass (CUDA kernels; aten ops on the CPU), top ops by self ms")
        for r in profiled:
            top = ", ".join(f"{name} {ms:.2f}" for name, ms in r["profile"]["top_ms"])
            print(
                f"{r['model']} {r['device']} {r['dtype']} {r['mode']} N={r['n']} B={r['batch']}: "
                f"{r['profile']['kernels'] or 'n/a'} kernels; {top}"
            )


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
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
        "--n", type=int, nargs="+", help="matches per pair (default 1000 ... 16000)"
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="batch sizes")
    parser.add_argument("--device", nargs="+", help="default: cpu, and cuda when available")
    parser.add_argument(
        "--dtype",
        nargs="+",
        choices=sorted(DTYPES),
        help="default: float32 on the CPU, float32 and bfloat16 on CUDA",
    )
    parser.add_argument(
        "--compile", action="store_true", help="add compiled rows (mode=reduce-overhead)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="kernels per forward pass and the top ops"
    )
    parser.add_argument("--threads", type=int, help="torch and OpenCV threads (default: all cores)")
    parser.add_argument("--pairs", type=int, default=4, help="synthetic pairs per N")
    parser.add_argument("--repeats", type=int, default=20, help="most timed calls per row")
    parser.add_argument("--min-repeats", type=int, default=3, help="fewest timed calls per row")
    parser.add_argument("--target-s", type=float, default=2.0, help="timed seconds per row")
    parser.add_argument(
        "--budget-s",
        type=float,
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
    if args.quick:
        args.pairs, args.target_s, args.budget_s = 2, 0.5, 5.0
    args.n = args.n or ([1000, 2000, 4000] if args.quick else [1000, 2000, 4000, 8000, 16000])
    args.device = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if args.threads is None:
        args.threads = available_cores()
    elif args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def main(argv: Sequence[str] | None = None, prog: str = "corrnet bench") -> int:
    """Measure, print the table and (with --out) write the JSON; returns the exit status."""
    args = parse_args(argv, prog)
    if args.probe:
        job = json.loads(args.probe)
        torch.set_num_threads(job["threads"])
        print(json.dumps(probe_job(job)))
        return 0
    return run_command(prog, lambda: measure(args))


def measure(args: argparse.Namespace) -> None:
    """Every row of the benchmark for the parsed ``args``; prints the table, writes --out."""
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    results: dict = {
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "probe"},
        "models": {},
        "baselines": [],
        "network": [],
        "laplacian": {},
    }
    configs = {}
    for path in args.config:
        config = load_net_config(path)
        configs[f"{path.stem}/w{config.get('width', 128)}"] = config
    nets = {name: CorrNet(CorrNetConfig.from_dict(config)) for name, config in configs.items()}
    for name, net in nets.items():
        results["models"][name] = {
            "config": configs[name],
            "parameters": sum(p.numel() for p in net.parameters()),
        }
        print(f"{name}: {results['models'][name]['parameters']:,} parameters")
    m = results["machine"]
    gpu = f", {m['gpu']}" if "gpu" in m else ""
    print(
        f"{m['cpu']}, {m['cores_available']} cores, torch {m['torch']} ({args.threads} threads), "
        f"OpenCV {m['opencv']}{gpu}; load {m['load_average_start'][0]:.2f}\n"
    )

    last: dict[tuple, tuple[int, int, float]] = {}  # (model, device, dtype, mode) -> row
    for n in args.n:
        samples = [generate_pair(0, i, num_matches=n, side_info=True) for i in range(args.pairs)]
        features = torch.stack([s["features"] for s in samples])  # (P, N, 6)
        xs = [s["xs"].double().numpy() for s in samples]
        results["baselines"].append(
            {
                "n": n,
                **{
                    f"{e}_ms": statistics.median(opencv_ms(x, e) for x in xs)
                    for e in OPENCV_METHODS
                },
            }
        )
        for device in map(torch.device, args.device):
            for width in sorted({c.get("width", 128) for c in configs.values()}):
                results["laplacian"][f"{device.type}/{width}/{n}"] = laplacian_row(
                    n, width, device, args
                )
            for name, net in nets.items():
                net.to(device)
                for dtype in args.dtype or (
                    ["float32"] + (["bfloat16"] if device.type == "cuda" else [])
                ):
                    for batch in args.batch:
                        eager_ms = None
                        for compile in [False, True] if args.compile else [False]:
                            mode = "compiled" if compile else "eager"
                            key = (name, device.type, dtype, mode)
                            prev = last.get(key)  # quadratic in N, linear in batch
                            estimate = (
                                None
                                if prev is None
                                else prev[2] * (n / prev[0]) ** 2 * batch / prev[1]
                            )
                            row = network_row(
                                net,
                                configs[name],
                                features[..., : net.in_channels],
                                batch,
                                device,
                                dtype,
                                args,
                                estimate,
                                compile,
                            )
                            row.update(model=name, width=configs[name].get("width", 128))
                            if not row["skipped"]:
                                last[key] = (n, batch, row["ms_per_batch"])
                                if compile and eager_ms is not None:
                                    row["vs_eager"] = eager_ms / row["ms_per_batch"]
                                eager_ms = eager_ms or row["ms_per_batch"]
                            results["network"].append(row)
                net.cpu()
    results["machine"]["load_average_end"] = os.getloadavg()
    print_table(results)
    print(
        f"\nload average (1 min) {m['load_average_start'][0]:.2f} at start, "
        f"{m['load_average_end'][0]:.2f} at the end"
    )
    if args.out:
        results["laplacian"] = list(results["laplacian"].values())
        with atomic_path(args.out) as tmp:  # minutes of timing: never a half-written file
            tmp.write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.out}")


if __name__ == "__main__":  # the memory probes run here (run_probe)
    sys.exit(main())
