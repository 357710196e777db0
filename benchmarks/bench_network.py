"""Network speed: parameter count, time per pair, and the dense-vs-fast graph Laplacian.

    python benchmarks/bench_network.py [--config configs/model/default.yaml] [--n 2000]
        [--batch 1] [--device cpu] [--dtype float32] [--threads 2] [--out bench.json]

Times are for eval mode under ``torch.no_grad``: the median (and the best, robust on a
shared machine) of ``--repeats`` runs after ``--warmup`` runs, divided by the batch size.  ``--dtype bfloat16|float16``
runs the network under autocast (the eight-point solve stays float64).  The Laplacian table
compares the O(N·C) form used by the model with the notes' dense N×N matrix.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from corrnet.models import CorrNet, laplacian_aggregate

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dense_laplacian(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Baseline: the notes' L = D^-1/2 (a aᵀ + I) D^-1/2 as an N×N matrix, then L x."""
    a = torch.relu(torch.tanh(w)).unsqueeze(-1)
    A = a @ a.transpose(1, 2) + torch.eye(w.shape[1], dtype=x.dtype, device=x.device)
    d = A.sum(-1).rsqrt()
    L = d.unsqueeze(-1) * A * d.unsqueeze(-2)
    return (L @ x.squeeze(-1).transpose(1, 2)).transpose(1, 2).unsqueeze(-1)


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int,
            repeats: int) -> tuple[float, float]:
    """Median and best wall time of fn() in milliseconds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/model/default.yaml"))
    parser.add_argument("--n", type=int, nargs="+", default=[2000], help="matches per pair")
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    config = yaml.safe_load(args.config.read_text())
    net = CorrNet(**config).to(device).eval()
    params = sum(p.numel() for p in net.parameters())
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    results: dict = {"config": config, "parameters": params, "device": str(device),
                     "dtype": args.dtype, "threads": args.threads, "network": [], "laplacian": []}

    print(f"CorrNet {args.config}: {params:,} parameters, {device}, {args.dtype}, {args.threads} threads")
    print(f"{'N':>7} {'batch':>6} {'ms/batch':>10} {'ms/pair':>9} {'best ms/pair':>13}")
    for n in args.n:
        for b in args.batch:
            x = torch.randn(b, 1, n, config.get("in_channels", 4), device=device)

            def forward() -> None:
                with torch.no_grad(), autocast:
                    net(x)

            ms, best = time_ms(forward, device, args.warmup, args.repeats)
            results["network"].append({"n": n, "batch": b, "ms_per_batch": ms, "ms_per_pair": ms / b,
                                       "best_ms_per_pair": best / b})
            print(f"{n:>7} {b:>6} {ms:>10.2f} {ms / b:>9.2f} {best / b:>13.2f}")

    width = config.get("width", 128)
    print(f"\nGraph Laplacian L x, C={width}, batch 1, float32")
    print(f"{'N':>7} {'fast ms':>9} {'dense ms':>9} {'rel. diff':>10}")
    for n in args.n:
        x = torch.randn(1, width, n, 1, device=device)
        w = torch.randn(1, n, device=device)
        with torch.no_grad():
            fast_ms = time_ms(lambda: laplacian_aggregate(x, w), device, args.warmup, args.repeats)[0]
            dense_ms = time_ms(lambda: dense_laplacian(x, w), device, args.warmup, args.repeats)[0]
            ref = dense_laplacian(x.double(), w.double())
            diff = float((laplacian_aggregate(x, w).double() - ref).norm() / ref.norm())
        results["laplacian"].append({"n": n, "channels": width, "fast_ms": fast_ms,
                                     "dense_ms": dense_ms, "rel_diff": diff})
        print(f"{n:>7} {fast_ms:>9.3f} {dense_ms:>9.2f} {diff:>10.1e}")

    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
