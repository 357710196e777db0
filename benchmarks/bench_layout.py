"""Feature layout micro-benchmark: CorrNet's (B, C, N, 1) PointCN block against the same block
on (B, N, C) tokens.

    python benchmarks/bench_layout.py [--device cpu|cuda] [--dtype float32 bfloat16]
        [--n 2000] [--batch 1 16] [--width 128] [--repeats 50]

``channels-first`` is :class:`corrnet.models.blocks.PointCN` as the network runs it (1×1
convolutions as ``baddbmm``, instance norm over the matches as ``group_norm``).
``tokens`` computes the same block on (B, N, C): ``F.linear`` for the 1×1 convolutions, the
instance norm as mean / variance over N, BatchNorm as its eval-mode affine.  Both use the
block's weights (eval mode, random BatchNorm statistics); the table gives the median ms per
call (CUDA synchronised), tokens / channels-first, and the largest difference of the outputs
(the two orders of summation round differently).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from corrnet.benchmark import median_ms
from corrnet.models.blocks import PointCN

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def tokens_pointcn(block: PointCN, x: torch.Tensor) -> torch.Tensor:
    """``block`` (eval mode) on tokens x (B, N, C) -> (B, N, C)."""
    out = x
    for layer in block.body:
        if isinstance(layer, torch.nn.BatchNorm2d):
            scale = layer.weight * torch.rsqrt(layer.running_var + layer.eps)
            out = out * scale + (layer.bias - layer.running_mean * scale)
        elif isinstance(layer, torch.nn.Conv2d):
            out = F.linear(out, layer.weight[..., 0, 0], layer.bias)
        elif isinstance(layer, torch.nn.ReLU):
            out = torch.relu(out)
        else:  # MatchNorm: over the matches, shifted by the first one as MatchNorm does
            centred = out - out[:, :1]
            var, mean = torch.var_mean(centred, dim=1, keepdim=True, correction=0)
            out = (centred - mean) * torch.rsqrt(var + layer.eps)
    return x + out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=sorted(DTYPES))
    parser.add_argument("--n", type=int, nargs="+", default=[2000])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    block = PointCN(args.width).to(device).eval()
    for bn in (m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    print(
        f"{'dtype':<9} {'N':>6} {'B':>4} {'channels-first ms':>18} {'tokens ms':>10} "
        f"{'ratio':>6} {'max diff':>9}"
    )
    for dtype in args.dtype:
        for n in args.n:
            for b in args.batch:
                x = torch.randn(b, args.width, n, 1, device=device)
                t = x.squeeze(-1).transpose(1, 2).contiguous()
                autocast = torch.autocast(device.type, DTYPES[dtype], enabled=dtype != "float32")
                with torch.inference_mode(), autocast:
                    first = median_ms(lambda x=x: block(x), device, args.repeats)
                    tokens = median_ms(lambda t=t: tokens_pointcn(block, t), device, args.repeats)
                    diff = (
                        (block(x).squeeze(-1).transpose(1, 2) - tokens_pointcn(block, t))
                        .abs()
                        .max()
                    )
                print(
                    f"{dtype:<9} {n:>6} {b:>4} {first:>18.3f} {tokens:>10.3f} "
                    f"{tokens / first:>6.2f} {float(diff):>9.2e}"
                )


if __name__ == "__main__":
    main()
