"""Shared fixtures: small noise-free two-view problems with known geometry (float64), and the
development data beside the repository (``../shared``), skipped where a clone has none."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from corrnet.geometry import skew

SHARED = Path(__file__).resolve().parents[2] / "shared"
"""The development data: beside the repository in CI and in the project's own checkout."""
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def need_shared(*parts: str) -> Path:
    """``SHARED/parts``; skips the calling test, naming the missing folder, where it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the development data beside the repository)")
    return path


@pytest.fixture(scope="session")
def real_dev() -> Path:
    """The real-dev pairs in OANet's raw layout (``../shared/real-dev``); skips without them."""
    return need_shared("real-dev")


def rotation(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula by matrix exponential.  (..., 3) radians -> (..., 3, 3)."""
    return torch.linalg.matrix_exp(skew(axis_angle))


def make_problem(
    batch: int, n: int, seed: int = 0, outliers: int = 0, dtype: torch.dtype = torch.float64
) -> dict[str, torch.Tensor]:
    """Random points in front of two cameras; the last ``outliers`` matches are random."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    R = rotation(0.3 * axis / axis.norm(dim=-1, keepdim=True))
    t = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    t = t / t.norm(dim=-1, keepdim=True)
    X1 = torch.randn(batch, n, 3, generator=g, dtype=torch.float64) + torch.tensor(
        [0.0, 0.0, 6.0], dtype=torch.float64
    )
    X2 = X1 @ R.transpose(-1, -2) + t[:, None]
    x = torch.cat([X1[..., :2] / X1[..., 2:], X2[..., :2] / X2[..., 2:]], -1)
    labels = torch.ones(batch, n, dtype=torch.bool)
    if outliers:
        x[:, n - outliers :, 2:] = (
            torch.rand(batch, outliers, 2, generator=g, dtype=torch.float64) - 0.5
        )
        labels[:, n - outliers :] = False
    return {"x": x.to(dtype), "R": R.to(dtype), "t": t.to(dtype), "labels": labels}


@pytest.fixture
def problem() -> dict[str, torch.Tensor]:
    return make_problem(batch=3, n=100)
