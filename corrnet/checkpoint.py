"""Loading and exporting CorrNet weights without executing code (``weights_only=True``)."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from corrnet.atomic import atomic_path, check_regular_input
from corrnet.channels import channel_columns, channel_count
from corrnet.errors import UserError
from corrnet.models import CorrNet, CorrNetConfig
from corrnet.tasks import Rigid, TwoView

PRETRAINED = TwoView().default_weights()
"""Default weights shipped with the package, trained on synthetic and real SfM pairs
(reproduced by ``scripts/reproduce_real.sh``)."""
PRETRAINED_RATIO_FREE = Path(__file__).parent / "pretrained" / "corrnet-ratiofree.pt"
"""Shipped weights for matches without Lowe ratio or mutual flag: they read the keypoints'
scale and orientation (``side_info: [log_scale_ratio, orientation]``; run ``ratio-free`` of
``scripts/ablation_channels.sh``)."""
PRETRAINED_REGISTRATION = Rigid().default_weights()
"""Shipped weights of the rigid (3-D registration) network (``configs/registration.yaml``)."""

FORMAT = "corrnet-weights"
FORMAT_VERSION = 2
"""Exported files: ``{"format": FORMAT, "format_version": 2, "net": CorrNetConfig as a dict,
"meta": {...}, "state_dict": {...}}``.  Version 1 (corrnet 0.1: ``"format":
"corrnet-weights-v1"``, no ``format_version``, ``net`` with ``in_channels``) still loads."""
LEGACY_FORMAT = "corrnet-weights-v1"
MAX_WEIGHT = 1e6
"""Largest |value| a stored floating tensor may hold: trained weights, optimiser moments and
normalisation statistics are orders of magnitude smaller; 1e30 would overflow the network."""
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "int | None": (int, type(None)),
    "tuple[int, ...]": (list, tuple),
    "bool | Sequence[str]": (bool, list, tuple),
}
"""Plain-data types a network configuration field of each annotation accepts."""


def check_state(state: Any, path: Path, what: str = "state_dict") -> dict[str, torch.Tensor]:
    """``state`` if it maps names to tensors whose floating values are finite and at most
    :data:`MAX_WEIGHT` in magnitude; else ValueError naming the file and the first bad entry."""
    if not isinstance(state, dict):
        raise UserError(
            f"{path}: {what}: expected a mapping of names to tensors, got {type(state).__name__}"
        )
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UserError(
                f"{path}: {what}: {key!r}: expected a tensor, got {type(value).__name__}"
            )
        if value.is_floating_point() and value.numel():
            largest = value.detach().abs().max().item()
            if not largest <= MAX_WEIGHT:  # NaN fails too
                raise UserError(
                    f"{path}: {what}: {key}: expected finite values within ±{MAX_WEIGHT:g}, "
                    f"got {largest:.3g}"
                )
    return state


def check_config_types(config: Any, source: str) -> dict[str, Any]:
    """``config`` if it is a mapping whose known :class:`CorrNetConfig` fields have the types
    their annotations name (``width: 64.0`` or ``side_info: 1`` are refused; an int is a
    float); else ValueError naming ``source`` and the field."""
    if not isinstance(config, dict):
        raise UserError(f"{source}: expected a mapping, got {type(config).__name__}")
    for field in dataclasses.fields(CorrNetConfig):
        allowed = _FIELD_TYPES.get(str(field.type))
        if field.name not in config or allowed is None:
            continue
        value = config[field.name]
        bad_bool = isinstance(value, bool) and bool not in allowed
        if bad_bool or not isinstance(value, allowed):
            raise UserError(
                f"{source}: {field.name}: expected {field.type}, got {value!r} "
                f"({type(value).__name__})"
            )
        if isinstance(value, (list, tuple)):
            kind = str if field.name == "side_info" else int
            if not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
                raise UserError(
                    f"{source}: {field.name}: expected {kind.__name__} items, got {value!r}"
                )
    return config


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors.

    ``mmap``: map the tensors instead of reading them (a cheap validity check of a file).
    Raises FileNotFoundError (no such file), OSError (not a regular file) or ValueError naming
    the file: not a torch file, or one holding Python objects that only code execution could
    rebuild (never loaded; the message names the first such object, never suggests unsafe
    loading).
    """
    path = check_regular_input(path, "checkpoint file")  # a FIFO would be read forever
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:  # torch's text advises weights_only=False: not quoted
        found = re.search(r"GLOBAL (\S+)", str(err))
        first = f" (first: {found.group(1)})" if found else ""
        raise UserError(
            f"{path}: not a corrnet checkpoint: it holds Python objects other than tensors "
            f"and plain data{first}, which corrnet never loads"
        ) from None
    except Exception:  # a truncated or foreign file
        raise UserError(f"{path}: not a corrnet checkpoint (not a readable torch file)") from None


def _net_config_and_state(
    ckpt: dict[str, Any], path: Path
) -> tuple[CorrNetConfig, dict[str, torch.Tensor]]:
    """Accept an exported file (format version 1 or 2) or a Lightning checkpoint of
    :class:`CorrNetModule` (old ``in_channels`` or new ``side_info`` hyperparameters)."""
    if not isinstance(ckpt, dict):
        ckpt = {}  # a bare tensor or list: refused below with the same message
    if ckpt.get("format") == LEGACY_FORMAT or ckpt.get("format") == FORMAT:
        version = ckpt.get("format_version", 1)
        if version not in (1, FORMAT_VERSION):
            raise UserError(
                f"{path}: corrnet weights of format_version {version!r}; this "
                f"corrnet reads format_version 1 and {FORMAT_VERSION}"
            )
        config, state = ckpt.get("net"), ckpt.get("state_dict")
    elif isinstance(ckpt.get("hyper_parameters"), dict) and "state_dict" in ckpt:
        config = ckpt["hyper_parameters"].get("net") or {}
        state = {
            k.removeprefix("net."): v
            for k, v in check_state(ckpt["state_dict"], path).items()
            if k.startswith("net.")
        }
    else:
        raise UserError(
            f"{path}: not a corrnet checkpoint (expected a Lightning checkpoint of "
            f"CorrNetModule or a file written by corrnet.checkpoint.export_model)"
        )
    check_state(state, path)
    try:
        source = f"{path}: network configuration"
        return CorrNetConfig.from_dict(check_config_types(config, source), source), state
    except (TypeError, ValueError) as err:
        raise UserError(str(err) if str(err).startswith(str(path)) else f"{path}: {err}") from None


def load_state(model: CorrNet, state: dict[str, torch.Tensor], path: Path) -> None:
    """``model.load_state_dict(state)``; weights of another architecture: one ValueError
    listing the mismatching keys."""
    check_same_architecture(model.state_dict(), state, path)
    model.load_state_dict(state)


def adapt_input_channels(
    state: dict[str, torch.Tensor], source: CorrNetConfig, target: CorrNetConfig, path: Path
) -> dict[str, torch.Tensor]:
    """Weights of ``source`` for the network ``target``, which differs at most in its input
    channels (``side_info``): each stage's ``embed`` keeps the columns of the channels both
    have, drops those ``target`` lacks and starts the new ones at zero, so that the adapted
    network computes exactly what ``source`` computed from the shared channels.  Any other
    difference in architecture: ValueError naming ``path``."""
    if dataclasses.replace(source, side_info=target.side_info) != target:
        raise UserError(
            f"{path}: weights of another architecture than model.net apart from side_info: "
            f"{source.to_dict()} against {target.to_dict()}"
        )
    coords = target.in_channels - channel_count(target.side_info)
    old = [f"coord{i}" for i in range(coords)] + list(channel_columns(source.side_info))
    new = [f"coord{i}" for i in range(coords)] + list(channel_columns(target.side_info))
    adapted = dict(state)
    for s in range(target.num_stages):
        key = f"stages.{s}.embed.weight"
        w = state[key]  # (width, [width +] C_in [+ 1], 1, 1)
        lead = 0 if s == 0 else target.width
        out = w.new_zeros(w.shape[0], lead + len(new) + (0 if s == 0 else 1), *w.shape[2:])
        out[:, :lead] = w[:, :lead]
        for j, name in enumerate(new):
            if name in old:
                out[:, lead + j] = w[:, lead + old.index(name)]
        if s > 0:
            out[:, -1] = w[:, -1]
        adapted[key] = out
    return adapted


def check_same_architecture(
    own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path: Path
) -> None:
    """ValueError naming ``path`` and the first mismatching keys unless ``state`` fits ``own``."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise UserError(
            f"{path}: weights of another architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {shapes[:5]}"
        )


def check_resumable(path: str | os.PathLike, module: torch.nn.Module) -> Path:
    """Check that ``path`` is a Lightning training checkpoint whose weights fit ``module``.

    Raises FileNotFoundError or ValueError naming the file: not a checkpoint, an exported
    weights file (no optimiser state or step counter to resume from), or weights of another
    architecture (e.g. another width).
    """
    path = Path(path)
    ckpt = read_checkpoint(path, mmap=True)
    if isinstance(ckpt, dict) and ckpt.get("format") in (FORMAT, LEGACY_FORMAT):
        raise UserError(
            f"{path}: exported weights (corrnet.checkpoint.export_model), not a training "
            f"checkpoint; resume from a .ckpt in checkpoint.dirpath"
        )
    if not (
        isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict) and "loops" in ckpt
    ):
        raise UserError(
            f"{path}: not a corrnet training checkpoint (expected a Lightning .ckpt "
            f"written by train.py)"
        )
    check_state(ckpt["state_dict"], path)
    check_training_state(ckpt, path)
    check_same_architecture(module.state_dict(), ckpt["state_dict"], path)
    return path


def _progress_problem(progress: Any) -> str | None:
    """None when ``progress`` is a Lightning progress record (``current`` and ``total`` counts)."""
    if not isinstance(progress, dict):
        return f"expected a mapping, got {type(progress).__name__}"
    for part in ("current", "total"):
        counts = progress.get(part)
        if not isinstance(counts, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()
        ):
            return f"{part}: expected counts >= 0, got {counts!r}"
    return None


def check_training_state(ckpt: dict[str, Any], path: Path) -> None:
    """ValueError naming the file and the entry unless the trainer state of a Lightning
    checkpoint (counters, loops, callbacks, optimiser states) has the types Lightning restores."""
    kinds = {"epoch": int, "global_step": int, "loops": dict, "callbacks": dict}
    kinds.update(optimizer_states=list, lr_schedulers=list)
    for key, kind in kinds.items():
        value = ckpt.get(key, kind())
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
            raise UserError(f"{path}: {key}: expected {kind.__name__}, got {value!r:.60}")
    fit = ckpt["loops"].get("fit_loop")
    if not isinstance(fit, dict):
        raise UserError(f"{path}: loops.fit_loop: expected a mapping, got {fit!r:.60}")
    for name in ("epoch_progress", "epoch_loop.batch_progress"):
        problem = _progress_problem(fit.get(name))
        if problem is not None:
            raise UserError(f"{path}: loops.fit_loop.{name}: {problem:.120}")
    entries = [(f"callbacks.{k}", v) for k, v in ckpt.get("callbacks", {}).items()]
    entries += [
        (f"optimizer_states[{i}]", v) for i, v in enumerate(ckpt.get("optimizer_states", []))
    ]
    for name, value in entries:
        if not isinstance(value, dict):
            raise UserError(f"{path}: {name}: expected a mapping, got {value!r:.60}")
    for i, optimizer in enumerate(ckpt.get("optimizer_states", [])):
        states = optimizer.get("state", {})
        for state in states.values() if isinstance(states, dict) else [states]:
            if not isinstance(state, dict):
                raise UserError(f"{path}: optimizer_states[{i}]: expected per-parameter mappings")
            tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
            check_state(tensors, path, f"optimizer_states[{i}]")


def read_weights(
    path: str | os.PathLike | None = None,
) -> tuple[CorrNetConfig, dict[str, torch.Tensor]]:
    """The network config and state dict of an exported file or a Lightning checkpoint
    (default: the shipped weights), with the errors of :func:`load_model`."""
    path = Path(path) if path is not None else PRETRAINED
    return _net_config_and_state(read_checkpoint(path), path)


def load_model(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> CorrNet:
    """CorrNet in eval mode from ``path`` (default: the shipped pretrained weights).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a corrnet checkpoint, is of an unknown format version,
            its network configuration has unknown keys, or its weights belong to another
            architecture (the message lists the mismatching keys).
    """
    config, state = read_weights(path)
    model = CorrNet(config)
    load_state(model, state, Path(path) if path is not None else PRETRAINED)
    return model.to(device).eval()


def export_model(
    checkpoint: str | os.PathLike, out: str | os.PathLike, meta: dict[str, Any] | None = None
) -> Path:
    """Write the network config and weights of a checkpoint to a small file, atomically.

    Weights are stored in float32.  ``meta`` holds plain data (the training command, scores).
    """
    out = Path(out)
    config, state = read_weights(checkpoint)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "net": config.to_dict(),
        "meta": meta or {},
        "state_dict": {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
    }
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    return out
