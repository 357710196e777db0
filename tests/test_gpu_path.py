"""The GPU path, checked on the CPU: no host synchronisation in the inference forward pass,
the fixed pruning count, batched evaluation, the compiled predictor, and DDP training.

* Synchronisation is counted by what would stop the host on an accelerator: dispatcher ops
  that read a value or produce a data-dependent shape (``_local_scalar_dense``, ``nonzero``,
  ``masked_select``, ...) and Python reads of a tensor (``tolist``, ``item``, ``bool``,
  ``int``, ``float``, ``numpy``, ``cpu``), and linear algebra that checks its solver's status
  on the host on CUDA (``_linalg_check_errors``, which ``torch.linalg.inv``, ``cholesky``,
  ``solve`` ... call, and ``eigh`` and ``svd``, which check inside their kernels; under
  ``inference_mode`` these reach the dispatcher as ``linalg_inv``, ``linalg_eigh`` ...).
* torch.compile with inductor takes about a minute for the tiny model on 2 CPU cores; that
  test runs on the CPU here and on the GPU under scripts/gpu_bench.sh; the graph capture
  (``aot_eager``) and the fallbacks are tested in tests/test_fast_paths.py.
"""

from __future__ import annotations

import collections
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from corrnet.datasets import generate_pair
from corrnet.eval.evaluate import evaluate, run_network_batch
from corrnet.models import CorrNet, CorrNetConfig, make_predictor

ROOT = Path(__file__).resolve().parents[1]
aten = torch.ops.aten
SYNC_OPS = {
    aten._local_scalar_dense.default,
    aten.item.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten._assert_async.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten._linalg_check_errors.default,
    aten._linalg_eigh.default,
    aten._linalg_svd.default,
    # under inference_mode the checked solvers reach the dispatcher undecomposed
    aten.linalg_eigh.default,
    aten.linalg_eigvalsh.default,
    aten.linalg_svd.default,
    aten.linalg_svdvals.default,
    aten.linalg_inv.default,
    aten.linalg_solve.default,
    aten.linalg_cholesky.default,
}
"""Dispatcher ops that read a device value on the host, give a data-dependent shape or check
a solver's status on the host (``linalg_inv_ex`` and the other ``_ex`` variants do not)."""
SYNC_METHODS = ("tolist", "item", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu")
"""Python-level tensor reads (``tolist`` does not go through the dispatcher)."""


class _Recorder(TorchDispatchMode):
    def __init__(self, counts: collections.Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNC_OPS:
            self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def count_syncs(monkeypatch: pytest.MonkeyPatch):
    """Counter of the host synchronisations (module docstring) while the block runs."""
    counts: collections.Counter = collections.Counter()
    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    with _Recorder(counts):
        yield counts
    monkeypatch.undo()


def tiny(**overrides) -> CorrNet:
    torch.manual_seed(0)
    config = dict(width=32, blocks_per_stage=2, heads=2, num_states=4, num_stages=3)
    return CorrNet(CorrNetConfig(**{**config, **overrides})).eval()


def pairs(
    sizes: list[int], n: int | None = None, side_info: bool | list[str] = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic pairs with ``sizes`` real matches padded (copies) to n: (B, n, 4 + channels of
    ``side_info``), (B, n)."""
    n = n or max(sizes)
    x = torch.stack(
        [
            generate_pair(0, i, num_matches=k, side_info=side_info)["features"][torch.arange(n) % k]
            for i, k in enumerate(sizes)
        ]
    )
    return x, torch.arange(n) < torch.tensor(sizes)[:, None]


@pytest.mark.parametrize("masked", [False, True])
def test_inference_forward_has_no_host_sync(monkeypatch, masked):
    net = tiny(attention_keys=50)  # the last stage attends to its top 50: topk in the graph
    x, mask = pairs([300, 180, 97] if masked else [300, 300], 300)
    with torch.inference_mode():
        with count_syncs(monkeypatch) as checked:
            net(x, mask if masked else None)
        with count_syncs(monkeypatch) as unchecked:
            out = net(x, mask if masked else None, validate=False)
    # the counter sees the one sync of the input checks ...
    assert checked["tolist"] == 1
    # ... and none in the forward pass, the eight-point head included
    assert dict(unchecked) == {}
    assert torch.isfinite(out["logits"]).all()
    # where a gradient is needed the head is eigh, which the counter sees
    with count_syncs(monkeypatch) as training:
        net(x, mask if masked else None, validate=False)
    assert dict(training) == {"aten._linalg_eigh.default": 1}


def test_rigid_inference_forward_has_no_host_sync(monkeypatch):
    """The rigid network (Kabsch head): sync-free without a gradient (Horn's rotation), the
    SVD where a gradient is needed."""
    torch.manual_seed(0)
    config = dict(width=16, blocks_per_stage=2, heads=2, num_states=4, attention_keys=40)
    net = CorrNet(CorrNetConfig(geometry="rigid", side_info=True, **config)).eval()
    g = torch.Generator().manual_seed(0)
    x1 = 2 * torch.randn(2, 128, 3, generator=g)
    x = torch.cat([x1, x1.flip(-1) + 1, torch.rand(2, 128, 2, generator=g)], -1)
    mask = torch.arange(128) < torch.tensor([[128], [90]])
    for m in (None, mask):
        with torch.inference_mode(), count_syncs(monkeypatch) as unchecked:
            out = net(x, m, validate=False)
        assert dict(unchecked) == {}
        assert torch.isfinite(out["R"]).all() and torch.isfinite(out["t"]).all()
        with count_syncs(monkeypatch) as training:
            trained = net(x, m, validate=False)
        assert training["aten._linalg_svd.default"] == 1
        torch.testing.assert_close(out["R"], trained["R"].detach(), atol=1e-12, rtol=0)


def test_unchecked_forward_equals_the_checked_one():
    net = tiny(attention_keys=50)
    x, mask = pairs([300, 180, 97], 300)
    with torch.no_grad():
        for m in (None, mask):
            checked, unchecked = net(x, m), net(x, m, validate=False)
            for key in ("logits", "weights", "E"):
                assert torch.equal(checked[key], unchecked[key])
        # an all-True mask runs the masked kernels unchecked: equal up to float rounding
        full = torch.ones(3, 300, dtype=torch.bool)
        torch.testing.assert_close(
            net(x, full, validate=False)["logits"], net(x)["logits"], atol=1e-5, rtol=1e-5
        )
    with pytest.raises(ValueError, match="mask: expected a bool"):
        net(x, mask.float(), validate=False)  # shapes and dtypes are still checked


def test_fixed_pruning_count_keeps_each_pairs_own_matches():
    """No pair fills the batch's N: every stage still has num_kept(N_(s-1)) slots, and each
    pair's real matches get the logits, E and kept indices of the pair alone."""
    net = tiny(attention_keys=40)
    sizes = [150, 97, 60]
    x, mask = pairs(sizes, 256)
    with torch.no_grad():
        out = net(x, mask, validate=False)
        assert [lg.shape[-1] for lg in out["stage_logits"]] == [256, 128, 64]
        for b, k in enumerate(sizes):
            alone = net(x[b : b + 1, :k])
            torch.testing.assert_close(
                out["logits"][b, :k], alone["logits"][0], atol=1e-5, rtol=1e-4
            )
            torch.testing.assert_close(out["E"][b], alone["E"][0], atol=1e-5, rtol=0)
            for s, (idx, m) in enumerate(zip(out["stage_indices"], out["stage_masks"])):
                assert torch.equal(idx[b][m[b]], alone["stage_indices"][s][0])


def test_predictor_checks_on_the_host_and_runs_unchecked(monkeypatch):
    net = tiny()
    x, mask = pairs([200, 120])
    predict = make_predictor(net)
    with count_syncs(monkeypatch) as counts:
        out = predict(x, mask)
    assert counts["tolist"] == 1  # CorrNet.check_inputs, on the host copy
    assert predict.device == torch.device("cpu")
    with torch.no_grad():
        torch.testing.assert_close(out["logits"], net(x, mask)["logits"], atol=0, rtol=0)
    bad = x.clone()
    bad[1, 3, 0] = torch.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values in pair\(s\) \[1\]"):
        predict(bad, mask)


def test_predictor_compiles_with_cuda_graph_mode(monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: seen.append(kw) or model)
    make_predictor(tiny(), compile=True)
    make_predictor(tiny(), compile=True, backend="aot_eager")
    make_predictor(tiny(), compile=True, mode="max-autotune")
    assert seen == [
        {"mode": "reduce-overhead", "dynamic": False},
        {"backend": "aot_eager"},
        {"mode": "max-autotune", "dynamic": False},
    ]


def test_inductor_compiled_predictor_matches_eager():
    """The compiled path itself (inductor; about a minute of compiling on 2 CPU cores)."""
    net = tiny(num_stages=2)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net.to(device)
    x, mask = pairs([200, 120])
    eager = make_predictor(net)
    predict = make_predictor(net, compile=True)
    for m in (None, mask, None):  # a second graph for the mask, then the first again
        out, ref = predict(x, m), eager(x, m)
        assert predict.compiled
        torch.testing.assert_close(out["logits"], ref["logits"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out["E"], ref["E"], atol=1e-4, rtol=0)
    first = predict(x)["logits"]
    predict(x + 0.01)  # a CUDA graph replay overwrites its buffers: outputs are copies
    assert torch.equal(first, predict(x)["logits"])


def _samples(sizes: list[int], side_info: bool = False) -> list[dict]:
    samples = [generate_pair(3, i, num_matches=k, side_info=side_info) for i, k in enumerate(sizes)]
    for i, s in enumerate(samples):
        s["index"] = i
    return samples


def test_batched_network_rows_equal_single_pairs():
    net = tiny()
    predict = make_predictor(net)
    samples = _samples([200, 140, 200, 90])
    rows, ms = run_network_batch(samples, predict)
    assert ms > 0
    for sample, row in zip(samples, rows):
        single, _ = run_network_batch([sample], predict)
        assert row["logits"].shape == (len(sample["xs"]),) and row["logits"].dtype == torch.float64
        torch.testing.assert_close(row["logits"], single[0]["logits"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(row["weights"], single[0]["weights"], atol=1e-5, rtol=1e-5)


def test_batched_evaluation_reports_the_one_by_one_numbers():
    """The shipped network, batch sizes 1, 2 and 5 over pairs of different N (padded, with a
    mask): the same kept matches, RANSAC poses and inlier scores, and the same eight-point
    pose within 1e-3 degrees (the logits agree to float32 rounding, ~1e-6).  The robust
    ``corrnet`` pose is left out: on an ill-conditioned pair it can move by degrees under such
    rounding (docs/gpu.md)."""

    from corrnet.checkpoint import PRETRAINED, load_model

    net = load_model(PRETRAINED)
    samples = _samples([300, 200, 300, 250, 150], side_info=net.config.side_info)
    methods = ["corrnet-8pt", "corrnet+ransac", "ransac"]
    runs = [
        evaluate(samples, make_predictor(net), methods, workers=1, progress=False, batch_size=b)
        for b in (1, 2, 5)
    ]
    for run in runs[1:]:
        assert run.pairs == runs[0].pairs == len(samples)
        for method in methods:
            for one, batched in zip(runs[0].of(method), run.of(method)):
                assert one.index == batched.index
                np.testing.assert_allclose(
                    [batched.err_R, batched.err_t], [one.err_R, one.err_t], rtol=0, atol=1e-3
                )
                assert (batched.precision, batched.recall) == (one.precision, one.recall)
                assert np.array_equal(batched.selected, one.selected)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(samples, make_predictor(net), methods, workers=1, progress=False, batch_size=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_eval_device_cuda_without_cuda_is_one_line(capsys):
    from eval import main

    with pytest.raises(SystemExit) as exit_:
        main(["--data", "synthetic", "--device", "cuda"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 + sum(line.startswith((" ", "usage")) for line in err)  # usage + 1
    assert err[-1].endswith(
        "error: --device cuda: no CUDA device available to torch " + torch.__version__
    )


def _train(run: Path, *args: str) -> dict[str, torch.Tensor]:
    """The network's parameters after 3 optimiser steps of train.py's CLI (configs/demo.yaml,
    tiny pairs, no validation) with extra trainer ``args``."""
    from corrnet.commands.train import CorrNetCLI
    from corrnet.training.datamodule import CorrNetDataModule
    from corrnet.training.module import CorrNetModule

    cli = CorrNetCLI(
        CorrNetModule,
        CorrNetDataModule,
        run=False,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=[
            "--config",
            str(ROOT / "configs/demo.yaml"),
            "--trainer.max_steps",
            "3",
            "--trainer.limit_val_batches",
            "0",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--trainer.accelerator",
            "cpu",
            "--trainer.default_root_dir",
            str(run),
            "--trainer.logger.init_args.save_dir",
            str(run),
            "--checkpoint.dirpath",
            str(run / "ckpt"),
            "--data.num_workers",
            "0",
            "--data.num_matches",
            "128",
            "--data.batch_size",
            "1",
            *args,
        ],
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    return {k: v.detach().clone() for k, v in cli.model.net.named_parameters()}


def shift_free_biases(net: torch.nn.Module) -> set[str]:
    """Biases of the 1×1 convolutions whose output goes straight into a normalisation
    (MatchNorm, or BatchNorm in training mode): a constant shift is normalised away, so their
    gradient is zero but for float rounding."""
    from corrnet.models.blocks import MatchNorm, PointwiseConv

    found = set()
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Sequential):
            layers = list(module)
            for i, (a, b) in enumerate(zip(layers, layers[1:])):
                if isinstance(a, PointwiseConv) and isinstance(
                    b, (MatchNorm, torch.nn.BatchNorm2d)
                ):
                    found.add(f"{name}.{i}.bias")
    return found


def test_ddp_on_two_processes_equals_one_process_on_the_global_batch(tmp_path):
    """2 DDP processes (gloo, ``--trainer.strategy ddp_spawn --trainer.devices 2``), one pair
    each per step, give the weights of one process accumulating the same two pairs
    (``accumulate_grad_batches 2``): the training sampler gives rank r draws r, r + 2, ... of
    the one order, DDP averages the two gradients, accumulation averages them too.  BatchNorm
    normalises each pair with its own batch statistics in both (DDP does not synchronise
    them), so only the summation order of the gradients differs: within 1e-6, except for the
    biases whose gradient is only rounding noise (:func:`shift_free_biases`), which Adam
    normalises into steps of up to lr."""
    init = _train(tmp_path / "init", "--trainer.max_steps", "0")
    single = _train(tmp_path / "single", "--trainer.accumulate_grad_batches", "2")
    ddp = _train(tmp_path / "ddp", "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2")
    noise = shift_free_biases(tiny(num_stages=2))  # configs/demo.yaml's network
    assert len(noise) == 6 and all(k in init for k in noise)  # 2 stages x (2 PointCN + graph)
    moved = max((single[k] - init[k]).abs().max() for k in init if k not in noise)
    assert moved > 1e-3  # three Adam steps of lr 1e-3 moved the weights
    diff = {k: float((ddp[k] - single[k]).abs().max()) for k in init if k not in noise}
    assert max(diff.values()) < 1e-6, sorted(diff.items(), key=lambda kv: -kv[1])[:3]
