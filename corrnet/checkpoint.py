"""Loading and exporting CorrNet weights without executing code (``weights_only=True``)."""

from __future__ import annotations

import os
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
    Raises FileNotFoundError (no such file) or ValueError (unreadable, or refused by the
    weights-only unpickler), both naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # unpickling refused or a corrupt file: name the file, keep the reason
        raise ValueError(f"{path}: not a readable corrnet checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0]})") from None


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
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: weights of another architecture: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shape {shapes[:5]}")
    model.load_state_dict(state)
    return model.to(device).eval()


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
