"""Loading and exporting CorrNet weights without executing code (``weights_only=True``)."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from corrnet.atomic import atomic_path
from corrnet.models import CorrNet

PRETRAINED = Path(__file__).parent / "pretrained" / "corrnet-synthetic.pt"
"""Weights shipped with the package, trained on the synthetic generator (see README)."""

FORMAT = "corrnet-weights-v1"


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors.

    ``mmap``: map the tensors instead of reading them (a cheap validity check of a file).
    Raises FileNotFoundError (no such file) or ValueError naming the file: not a torch file,
    or one holding Python objects that only code execution could rebuild (never loaded; the
    message names the first such object, never suggests unsafe loading).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:   # torch's text advises weights_only=False: not quoted
        found = re.search(r"GLOBAL (\S+)", str(err))
        first = f" (first: {found.group(1)})" if found else ""
        raise ValueError(f"{path}: not a corrnet checkpoint: it holds Python objects other than tensors "
                         f"and plain data{first}, which corrnet never loads") from None
    except Exception:  # a truncated or foreign file
        raise ValueError(f"{path}: not a corrnet checkpoint (not a readable torch file)") from None


def _net_config_and_state(ckpt: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Accept an exported file or a Lightning checkpoint of :class:`CorrNetModule`."""
    if not isinstance(ckpt, dict):
        ckpt = {}   # a bare tensor or list: refused below with the same message
    if ckpt.get("format") == FORMAT:
        return ckpt["net"], ckpt["state_dict"]
    hp = ckpt.get("hyper_parameters")
    if isinstance(hp, dict) and "state_dict" in ckpt:
        state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
        return hp.get("net") or {}, state
    raise ValueError(f"{path}: not a corrnet checkpoint (expected a Lightning checkpoint of "
                     f"CorrNetModule or a file written by corrnet.checkpoint.export_model)")


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> CorrNet:
    """CorrNet in eval mode from ``path`` (default: the shipped pretrained weights).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a corrnet checkpoint, or its weights belong to another
            architecture (the message lists the mismatching keys).
    """
    path = Path(path) if path is not None else PRETRAINED
    config, state = _net_config_and_state(read_checkpoint(path), path)
    try:
        model = CorrNet(**config)
    except TypeError as err:
        raise ValueError(f"{path}: network configuration {config} does not fit this version "
                         f"of CorrNet ({err})") from None
    check_same_architecture(model.state_dict(), state, path)
    model.load_state_dict(state)
    return model.to(device).eval()


def check_same_architecture(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                            path: Path) -> None:
    """ValueError naming ``path`` and the first mismatching keys unless ``state`` fits ``own``."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: weights of another architecture: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shape {shapes[:5]}")


def check_resumable(path: str | os.PathLike, module: torch.nn.Module) -> Path:
    """Check that ``path`` is a Lightning training checkpoint whose weights fit ``module``.

    Raises FileNotFoundError or ValueError naming the file: not a checkpoint, an exported
    weights file (no optimiser state or step counter to resume from), or weights of another
    architecture (e.g. another width).
    """
    path = Path(path)
    ckpt = read_checkpoint(path, mmap=True)
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        raise ValueError(f"{path}: exported weights (corrnet.checkpoint.export_model), not a training "
                         f"checkpoint; resume from a .ckpt in checkpoint.dirpath")
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict) and "loops" in ckpt):
        raise ValueError(f"{path}: not a corrnet training checkpoint (expected a Lightning .ckpt "
                         f"written by train.py)")
    check_same_architecture(module.state_dict(), ckpt["state_dict"], path)
    return path


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike,
                 meta: dict[str, Any] | None = None) -> Path:
    """Write the network config and weights of a checkpoint to a small file, atomically.

    Weights are stored in float32.  ``meta`` holds plain data (the training command, scores).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    config, state = _net_config_and_state(read_checkpoint(checkpoint), checkpoint)
    payload = {"format": FORMAT, "net": config, "meta": meta or {},
               "state_dict": {k: v.float() if v.is_floating_point() else v for k, v in state.items()}}
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    return out
