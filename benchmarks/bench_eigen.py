"""Speed of the sync-free smallest eigenvector against ``torch.linalg.eigh`` on eight-point
systems, in the same process.

    python benchmarks/bench_eigen.py [--device cpu|cuda] [--batch 1 16 64 256] [--n 500]
        [--repeats 50] [--threads T]

Each row: B systems XᵀWX (float64, (B, 9, 9)) from the N matches of synthetic pairs
(:func:`corrnet.datasets.generate_pair`: noise and outliers), random weights in [0, 1); the
median ms per call (CUDA synchronised) of ``eigh``'s smallest eigenvector and of
:func:`corrnet.geometry.eigen.smallest_eigenvector`, their ratio, the largest distance between
the two unit vectors (up to sign) and eigh's own accuracy bound ε·λₘₐₓ / (λ₁ − λ₀) at that
row's worst case.  ``head`` rows time the whole :func:`~corrnet.geometry.weighted_eight_point`
(B, N matches) without a gradient (sync-free) and with one (eigh, forward only).  ``kabsch``
rows time :func:`~corrnet.geometry.rigid.weighted_kabsch` on B rigid motions of N random 3-D
points with noise: the SVD (``eigh ms`` column, the path with a gradient, forward only)
against Horn's sync-free rotation, and the largest entry difference of the two R.
"""

from __future__ import annotations

import argparse

import torch

from corrnet.benchmark import median_ms
from corrnet.datasets import generate_pair
from corrnet.geometry import WEIGHT_FLOOR, eight_point_rows, weighted_eight_point
from corrnet.geometry.eigen import smallest_eigenvector
from corrnet.geometry.rigid import weighted_kabsch


def matches(b: int, n: int, device: torch.device) -> torch.Tensor:
    """(b, n, 4) normalised matches of the synthetic generator (its pairs' outliers and noise)."""
    return torch.stack([generate_pair(0, i, num_matches=n)["xs"] for i in range(b)]).to(device)


def rigid_matches(b: int, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, n, 3) source points and their images under random rotations and translations,
    with 1 cm noise (a ~2 m cloud)."""
    g = torch.Generator().manual_seed(b)
    R = torch.linalg.qr(torch.randn(b, 3, 3, generator=g, dtype=torch.float64)).Q
    R = R * torch.linalg.det(R).sign()[:, None, None]  # a rotation
    t = torch.randn(b, 1, 3, generator=g, dtype=torch.float64)
    x1 = 2 * torch.randn(b, n, 3, generator=g, dtype=torch.float64)
    x2 = x1 @ R.transpose(-1, -2) + t + 0.01 * torch.randn(x1.shape, generator=g)
    return x1.to(device), x2.to(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    print(f"device {device}, N = {args.n}, {threads} threads, torch {torch.__version__}")
    print(
        f"{'what':<7} {'B':>4} {'eigh ms':>9} {'sync-free ms':>13} {'ratio':>6} "
        f"{'max dist':>9} {'eigh bound':>10}"
    )
    for b in args.batch:
        x = matches(b, args.n, device).double()
        w = torch.rand(b, args.n, generator=torch.Generator().manual_seed(b)).to(device)
        X = eight_point_rows(x)
        M = X.transpose(-1, -2) @ (X * (w.double() + WEIGHT_FLOOR).unsqueeze(-1))
        wg = w.clone().requires_grad_()
        with torch.no_grad():
            lam, V = torch.linalg.eigh(M)
            v = smallest_eigenvector(M)
            dist = torch.minimum((v - V[..., 0]).norm(dim=-1), (v + V[..., 0]).norm(dim=-1))
            bound = torch.finfo(M.dtype).eps * lam[..., -1] / (lam[..., 1] - lam[..., 0])
            eigh = median_ms(lambda M=M: torch.linalg.eigh(M)[1][..., 0], device, args.repeats)
            free = median_ms(lambda M=M: smallest_eigenvector(M), device, args.repeats)
            head_free = median_ms(
                lambda x=x, w=w: weighted_eight_point(x, w, validate=False), device, args.repeats
            )
        head_eigh = median_ms(
            lambda x=x, w=wg: weighted_eight_point(x, w, validate=False), device, args.repeats
        )
        print(
            f"{'solver':<7} {b:>4} {eigh:>9.3f} {free:>13.3f} {free / eigh:>6.2f} "
            f"{float(dist.max()):>9.1e} {float(bound.max()):>10.1e}"
        )
        print(
            f"{'head':<7} {b:>4} {head_eigh:>9.3f} {head_free:>13.3f} {head_free / head_eigh:>6.2f}"
        )
        x1, x2 = rigid_matches(b, args.n, device)
        with torch.no_grad():
            R_free = weighted_kabsch(x1, x2, w, validate=False)[0]
            kabsch_free = median_ms(
                lambda x1=x1, x2=x2, w=w: weighted_kabsch(x1, x2, w, validate=False),
                device,
                args.repeats,
            )
        R_svd = weighted_kabsch(x1, x2, wg, validate=False)[0].detach()
        kabsch_svd = median_ms(
            lambda x1=x1, x2=x2, w=wg: weighted_kabsch(x1, x2, w, validate=False),
            device,
            args.repeats,
        )
        print(
            f"{'kabsch':<7} {b:>4} {kabsch_svd:>9.3f} {kabsch_free:>13.3f} "
            f"{kabsch_free / kabsch_svd:>6.2f} {float((R_free - R_svd).abs().max()):>9.1e}"
        )


if __name__ == "__main__":
    main()
