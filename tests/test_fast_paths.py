"""Fast inference paths give the plain float32 path's logits: batched, bf16, compiled, fallback.

Tolerances (CorrNet with random weights, synthetic pairs, eval mode):

* batched: a batch of 4 pairs equals 4 single-pair calls, logits within 1e-5 + 1e-5·|logit|
  (float32 rounding: the batched matrix products sum in another order).
* bf16 autocast (CPU): the first stage's logits (before any pruning) within 0.5 absolute
  and 0.02 in the mean (measured 0.40 / 0.008: with the graph gates open at initialisation,
  L x is nearly the same vector for every match, and the instance norm after it magnifies
  bf16 rounding on a few matches; 0.14 / 0.008 with half the gates closed); the inlier decision
  (logit > 0) of the full output agrees on >= 99 %
  of the matches whose float32 |logit| > 0.1 (pruning may keep other matches under bf16,
  so later stages can score a few matches differently).
* torch.compile: graph capture with ``backend="aot_eager"`` (FX graph + AOTAutograd, no code
  generation: a few seconds on 2 cores, where inductor's C++ build takes over a minute),
  logits within 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch
import yaml

from corrnet import benchmark
from corrnet.commands import bench
from corrnet.datasets import generate_pair
from corrnet.models import CorrNet, CorrNetConfig
from corrnet.models.inference import make_predictor

ROOT = Path(__file__).resolve().parents[1]


def model(name: str, seed: int = 0) -> CorrNet:
    torch.manual_seed(seed)
    return CorrNet(
        CorrNetConfig(**yaml.safe_load((ROOT / "configs" / "model" / f"{name}.yaml").read_text()))
    ).eval()


def pairs(count: int, n: int) -> torch.Tensor:
    """Synthetic pairs (count, n, 4)."""
    return torch.stack([generate_pair(0, i, num_matches=n)["features"] for i in range(count)])


def test_batch_equals_single_pairs():
    net, x = model("default"), pairs(4, 500)
    predict = make_predictor(net)
    batched = predict(x)
    for i in range(len(x)):
        single = predict(x[i : i + 1])
        torch.testing.assert_close(batched["logits"][i], single["logits"][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            batched["weights"][i], single["weights"][0], atol=1e-5, rtol=1e-5
        )
        assert torch.equal(batched["stage_indices"][-1][i], single["stage_indices"][-1][0])


def test_bf16_autocast_close_to_float32():
    net, x = model("default"), pairs(4, 1000)
    full = make_predictor(net)(x)
    half = make_predictor(net, torch.bfloat16)(x)
    assert half["stage_logits"][0].dtype == torch.bfloat16
    assert half["E"].dtype == torch.float32 and torch.isfinite(half["E"]).all()
    first = (full["stage_logits"][0] - half["stage_logits"][0].float()).abs()
    assert first.max() <= 0.5 and first.mean() <= 0.02
    logits, logits_bf16 = full["logits"], half["logits"].float()
    confident = logits.abs() > 0.1
    assert confident.float().mean() > 0.5  # the check covers most matches
    agree = ((logits > 0) == (logits_bf16 > 0))[confident].float().mean()
    assert agree >= 0.99


def test_compiled_graph_matches_eager():
    net, x = model("tiny"), pairs(2, 200)
    eager = make_predictor(net)(x)
    predict = make_predictor(net, compile=True, backend="aot_eager", dynamic=False)
    out = predict(x)
    assert predict.compiled
    torch.testing.assert_close(out["logits"], eager["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["E"], eager["E"], atol=1e-5, rtol=0)


def failing_backend(graph: torch.fx.GraphModule, example_inputs: list) -> None:
    raise RuntimeError("no compiler here")


def test_compile_failure_falls_back_to_eager():
    net, x = model("tiny"), pairs(1, 100)
    eager = make_predictor(net)(x)
    predict = make_predictor(net, compile=True, backend=failing_backend)
    with pytest.raises(ValueError, match="expected shape"):  # a bad input is the caller's error
        predict(x[..., :3])
    assert predict.compiled
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        out = predict(x)
    assert not predict.compiled
    torch.testing.assert_close(out["logits"], eager["logits"], atol=0, rtol=0)
    torch.testing.assert_close(predict(x)["logits"], eager["logits"], atol=0, rtol=0)


def test_compile_unavailable_falls_back_to_eager(monkeypatch):
    def unsupported(*args, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", unsupported)
    net, x = model("tiny"), pairs(1, 100)
    with pytest.warns(RuntimeWarning, match="torch.compile unavailable"):
        predict = make_predictor(net, compile=True)
    assert not predict.compiled
    torch.testing.assert_close(
        predict(x)["logits"], make_predictor(net)(x)["logits"], atol=0, rtol=0
    )


def test_predictor_runs_in_eval_mode_without_autograd():
    net = model("tiny").train()
    x = pairs(1, 100)
    out = make_predictor(net)(x)
    assert not net.training and not out["logits"].requires_grad
    with pytest.raises(ValueError, match="dtype"):
        make_predictor(net, torch.float64)


@pytest.fixture
def keep_threads():
    """The benchmark's main() sets torch and OpenCV threads: restore them afterwards."""
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv_threads)


def test_benchmark_rows_baselines_and_skips(tmp_path, capsys, keep_threads):
    out = tmp_path / "bench.json"
    # a budget of 0 s skips every row that has an estimate: all but the first
    bench.main(
        [
            "--config",
            "configs/model/tiny.yaml",
            "--n",
            "64",
            "128",
            "--batch",
            "1",
            "2",
            "--pairs",
            "2",
            "--repeats",
            "2",
            "--min-repeats",
            "1",
            "--target-s",
            "0",
            "--budget-s",
            "0",
            "--no-memory",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    rows = result["network"]
    assert [(r["n"], r["batch"], r["skipped"]) for r in rows] == [
        (64, 1, False),
        (64, 2, True),
        (128, 1, True),
        (128, 2, True),
    ]
    assert rows[0]["ms_per_pair"] > 0 and rows[0]["repeats"] == 1
    assert [b["n"] for b in result["baselines"]] == [64, 128]
    assert all(b["ransac_ms"] > 0 and b["magsac_ms"] > 0 for b in result["baselines"])
    assert all(lap["rel_diff"] < 1e-5 for lap in result["laplacian"])
    assert result["machine"]["torch"] == torch.__version__
    assert "skipped" in capsys.readouterr().out


def test_benchmark_cpu_memory_probe_sees_a_large_tensor():
    mib = benchmark.cpu_peak_mib(lambda: torch.ones(64, 2**20).sum())  # 256 MiB
    if mib is None:
        pytest.skip("no /proc/self/clear_refs on this system")
    assert 200 < mib < 400
    # N×N float32 matrices of 34 MiB, each probe in a fresh interpreter as the benchmark runs
    # it (in this process, pages freed by earlier tests can be reused without raising the peak)
    n = 3000
    dense = benchmark.run_probe(
        {"kind": "dense", "device": "cpu", "n": n, "width": 32, "threads": 1}
    )
    fast = benchmark.run_probe({"kind": "fast", "device": "cpu", "n": n, "width": 32, "threads": 1})
    assert dense > 2.5 * n**2 * 4 / 2**20 > 10 * fast  # A, a aᵀ and I alive at once


def test_evaluation_times_the_network_on_one_thread():
    """corrnet.eval times the network like each estimator, on one core, and restores threads."""
    from corrnet.eval.evaluate import evaluate

    samples = [generate_pair(0, i, num_matches=200) for i in range(2)]
    net, seen = model("tiny"), []

    def predictor(features: torch.Tensor) -> dict:
        seen.append(torch.get_num_threads())
        return net(features)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = evaluate(samples, predictor, methods=["corrnet"], workers=1, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert seen == [1, 1]
    assert all(r.ms > 0 for r in result.of("corrnet"))
