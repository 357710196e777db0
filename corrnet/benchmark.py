"""Network speed and memory against OpenCV RANSAC / MAGSAC and a dense graph Laplacian: the
measurements behind ``corrnet bench`` (:mod:`corrnet.commands.bench`, whose docstring says what
each row measures and how)."""

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
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

import corrnet
from corrnet.atomic import atomic_path
from corrnet.constants import BENCH_DTYPES
from corrnet.datasets import generate_pair
from corrnet.eval.estimators import MAX_ITERS, OPENCV_METHODS, PROB, SEED, THRESHOLD
from corrnet.models import CorrNet, CorrNetConfig, laplacian_aggregate
from corrnet.models.inference import make_predictor

DTYPES = {name: getattr(torch, name) for name in BENCH_DTYPES}
"""The dtypes ``--dtype`` takes, by name."""
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
    """Baseline: the graph Laplacian L = D^-1/2 (a aᵀ + I) D^-1/2 as an N×N matrix, then L x.

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


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time in ms of ``repeats`` synchronised calls of fn(), after one warm-up call."""
    fn()
    return statistics.median(time_calls(lambda _: fn(), device, repeats))


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


def measure(args: argparse.Namespace) -> None:
    """Every row of the benchmark for the parsed ``args``
    (:func:`corrnet.commands.bench.parse_args`); prints the table, writes --out."""
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
