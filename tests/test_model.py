"""CorrNet and its loss: shapes, equivariance, gradients, robustness, overfitting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from corrnet.geometry import (
    essential_from_pose,
    pixel_sampson_distance,
    symmetric_epipolar_distance,
    weighted_eight_point,
)
from corrnet.models import (
    CorrNet,
    CorrNetConfig,
    CorrNetLoss,
    balanced_bce,
    laplacian_aggregate,
    virtual_correspondences,
)
from corrnet.models.graph_stats import graph_liveness, roc_auc
from corrnet.tasks import get_task
from tests.conftest import make_problem, rotation

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"


def model_config(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


def tiny(**overrides) -> CorrNet:
    return CorrNet(CorrNetConfig(**{**model_config("tiny"), **overrides}))


def synthetic_batch(batch: int, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random 3-D points seen by two cameras, half the matches uniform outliers (float32)."""
    p = make_problem(batch, n, seed=seed, outliers=n // 2)
    xs = p["x"].float()
    return {
        "xs": xs,
        "features": xs,
        "labels": p["labels"].float(),
        "R": p["R"].float(),
        "t": p["t"].float(),
        "ys": symmetric_epipolar_distance(p["x"], essential_from_pose(p["R"], p["t"])).float(),
    }


@pytest.mark.parametrize("n", [8, 9, 100, 2000])
@pytest.mark.parametrize("b", [1, 3])
def test_output_shapes_and_consistency(n, b):
    torch.manual_seed(0)
    net = (CorrNet(CorrNetConfig(**model_config("default"))) if n == 2000 else tiny()).eval()
    x = torch.randn(b, n, 4)
    with torch.no_grad():
        out = net(x)
    assert out["logits"].shape == (b, n) and out["weights"].shape == (b, n)
    assert out["E"].shape == (b, 3, 3) and out["E"].dtype == torch.float32
    sizes = [lg.shape[-1] for lg in out["stage_logits"]]
    assert sizes[0] == n and all(s >= min(n, 8) for s in sizes)
    assert torch.equal(out["stage_indices"][0], torch.arange(n).expand(b, n))
    for prev, idx, lg in zip(
        out["stage_indices"], out["stage_indices"][1:], out["stage_logits"][1:]
    ):
        assert idx.shape == lg.shape and idx.dtype == torch.long
        assert all(
            set(i.tolist()) <= set(p.tolist()) and len(set(i.tolist())) == i.numel()
            for i, p in zip(idx, prev)
        )
    # The last stage's logits are the output logits of its matches.
    last = out["stage_indices"][-1]
    assert torch.equal(out["logits"].gather(1, last), out["stage_logits"][-1])
    w = torch.relu(torch.tanh(out["stage_logits"][-1]))
    assert torch.equal(out["weights"].gather(1, last), w)
    E = weighted_eight_point(x.gather(1, last.unsqueeze(-1).expand(-1, -1, 4)), w)
    assert torch.allclose(out["E"], E, atol=1e-6)


def test_pruning_sizes_and_six_channels():
    net = tiny(side_info=True, num_stages=3, prune_ratio=0.25).eval()
    out = net(torch.randn(2, 101, 6))
    assert [lg.shape[-1] for lg in out["stage_logits"]] == [101, 26, 8]
    with pytest.raises(ValueError, match="at least 8"):
        net(torch.randn(1, 7, 6))
    with pytest.raises(ValueError, match="expected shape"):
        net(torch.randn(1, 50, 4))


def test_num_kept_per_pair_counts_follow_the_int_rule():
    """num_kept of a (B,) count tensor is the int rule, pair by pair (ceil, >= 8, at most n)."""
    net = tiny(prune_ratio=0.3)
    n = torch.arange(0, 300)
    kept = net.num_kept(n)
    assert kept.dtype == torch.long and kept.tolist() == [net.num_kept(int(c)) for c in n]
    assert [net.num_kept(c) for c in (5, 8, 26, 27, 100)] == [5, 8, 8, 9, 30]


@pytest.mark.parametrize("attention_keys", [1024, 40])
def test_eval_is_deterministic_and_permutation_equivariant(attention_keys):
    torch.manual_seed(1)
    net = CorrNet(
        CorrNetConfig(**{**model_config("default"), "attention_keys": attention_keys})
    ).eval()
    x = synthetic_batch(2, 300, seed=4)["xs"]
    perm = torch.randperm(300)
    with torch.no_grad():
        out, again, outp = net(x), net(x), net(x[:, perm])
    assert torch.equal(out["logits"], again["logits"])
    assert torch.allclose(outp["logits"], out["logits"][:, perm], atol=1e-5)
    for idx, idxp in zip(out["stage_indices"], outp["stage_indices"]):
        assert all(set(i.tolist()) == set(perm[j].tolist()) for i, j in zip(idx, idxp))
    sign = torch.sign((outp["E"] * out["E"]).sum((-1, -2)))[:, None, None]
    assert torch.allclose(outp["E"] * sign, out["E"], atol=1e-5)


def test_bounded_attention_keys():
    torch.manual_seed(5)
    x = torch.randn(2, 200, 4)
    with torch.no_grad():
        net = tiny(attention_keys=None).eval()
        full = net(x)["logits"]
        net.stages[-1].attention_keys = 100  # the last stage sees exactly 100 matches
        assert torch.equal(net(x)["logits"], full)
        net.stages[-1].attention_keys = 10
        assert not torch.allclose(net(x)["logits"], full, atol=1e-4)
    with pytest.raises(ValueError, match="attention_keys"):
        tiny(attention_keys=0)


def test_every_parameter_gets_a_finite_gradient():
    torch.manual_seed(2)
    net = tiny(num_stages=3, attention_stages=[0, -1], attention_keys=16).train()
    batch = synthetic_batch(2, 64)
    out = net(batch["xs"])
    total, parts = CorrNetLoss(essential_warmup=0)(out, batch, step=0)
    total.backward()
    missing = [
        k for k, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert not missing
    zero = [k for k, p in net.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero  # the graph heads included: their gates start open and w is supervised
    assert {"cls_0", "cls_1", "cls_2", "graph_0", "graph_1", "graph_2", "essential"} == set(parts)


def test_without_graph_layer_only_the_laplacian_goes():
    """The ablation (graph_layer=False): no Laplacian parameters, the supervised graph head
    stays, and the outputs change when the layer is put back with the same other weights."""
    torch.manual_seed(4)
    full, ablated = tiny().eval(), tiny(graph_layer=False).eval()
    names = set(full.state_dict()) - set(ablated.state_dict())
    assert names and all(".graph." in k for k in names)
    assert any(".graph_head." in k for k in ablated.state_dict())
    ablated.load_state_dict({k: v for k, v in full.state_dict().items() if k not in names})
    x = synthetic_batch(2, 64)["xs"]
    out, out_ablated = full(x), ablated(x)
    assert torch.allclose(out["graph_logits"][0], out_ablated["graph_logits"][0])
    assert not torch.allclose(out["logits"], out_ablated["logits"], atol=1e-4)


@pytest.mark.parametrize("case", ["duplicated", "identical", "equal_logits"])
def test_degenerate_inputs_stay_finite(case):
    torch.manual_seed(3)
    net = tiny().train()
    batch = synthetic_batch(2, 40)
    x = batch["xs"].clone()
    if case == "duplicated":
        x[:, 20:] = x[:, :20]
    elif case == "identical":
        x[:] = x[:, :1]
    else:
        for stage in net.stages:
            for head in (stage.head, stage.graph_head):
                torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    out = net(x)
    if case == "equal_logits":
        assert torch.equal(out["logits"], torch.zeros_like(out["logits"]))
    total, _ = CorrNetLoss(essential_warmup=0)(out, batch, step=0)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(out["E"]).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_bfloat16_autocast_on_cpu():
    torch.manual_seed(4)
    net = tiny().eval()
    x = synthetic_batch(2, 120)["xs"]
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = net(x)
    assert out["E"].dtype == torch.float32
    assert torch.isfinite(out["logits"].float()).all() and torch.isfinite(out["E"]).all()
    assert torch.allclose(out["E"].norm(dim=(-1, -2)), torch.ones(2), atol=1e-5)


def test_balanced_bce_matches_closed_form():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0], [0.0, 1.0, -2.0, 4.0]], dtype=torch.float64)
    labels = torch.tensor([[True, False, False, False], [True, True, True, False]])
    sp = lambda z: torch.log1p(torch.exp(torch.as_tensor(z, dtype=torch.float64)))
    first = 0.5 * sp(-2.0) + 0.5 * (sp(-1.0) + sp(0.5) + sp(3.0)) / 3
    second = 0.5 * (sp(0.0) + sp(-1.0) + sp(2.0)) / 3 + 0.5 * sp(4.0)
    assert torch.allclose(balanced_bce(logits, labels).double(), (first + second) / 2, atol=1e-6)
    # Padded matches (mask False) do not count.
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    first_masked = 0.5 * sp(-2.0) + 0.5 * (sp(-1.0) + sp(0.5)) / 2
    assert torch.allclose(
        balanced_bce(logits, labels, mask).double(), (first_masked + second) / 2, atol=1e-6
    )


def test_essential_loss_uses_exact_virtual_matches():
    p = make_problem(3, 10, seed=5)
    R, t = p["R"], p["t"]
    pts, valid = virtual_correspondences(R, t)
    assert pts.shape == (3, 100, 4) and valid.all()
    E = essential_from_pose(R, t)
    ones = torch.ones_like(pts[..., :1])
    x1, x2 = torch.cat([pts[..., :2], ones], -1), torch.cat([pts[..., 2:], ones], -1)
    assert torch.einsum("bni,bij,bnj->bn", x2, E, x1).abs().max() < 1e-12
    loss = CorrNetLoss()
    assert loss.essential_loss(-3.0 * E, R, t) < 1e-20  # scale and sign do not matter
    E_bad = essential_from_pose(R @ rotation(torch.tensor([0.0, 0.1, 0.0], dtype=torch.float64)), t)
    d = symmetric_epipolar_distance(pts, E_bad).clamp(max=0.1).mean()
    assert torch.allclose(loss.essential_loss(E_bad, R, t), d) and d > 1e-4


def test_essential_term_starts_after_warm_up():
    torch.manual_seed(6)
    net, batch = tiny().eval(), synthetic_batch(1, 50)
    out = net(batch["xs"])
    loss = CorrNetLoss(essential_weight=0.5, essential_warmup=100)
    before, parts = loss(out, batch, step=99)
    after, _ = loss(out, batch, step=100)
    cls = sum(v for k, v in parts.items() if k.startswith(("cls_", "graph_")))
    assert torch.allclose(before, cls) and torch.allclose(after, cls + 0.5 * parts["essential"])


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(7)
    net = tiny().train()
    batch = synthetic_batch(2, 128, seed=8)
    x, labels = batch["xs"], batch["labels"] > 0.5
    loss = CorrNetLoss(essential_warmup=0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(120):  # 80 reached 1.0 with two threads but 0.93 with one
        opt.zero_grad()
        total, _ = loss(net(x), batch, step)
        total.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)  # as the training configs
        opt.step()
    net.eval()
    with torch.no_grad():
        out = net(x)
    accuracy = ((out["logits"] > 0) == labels).float().mean()
    assert accuracy > 0.95


def test_padding_does_not_change_the_real_matches():
    """A padded batch (masked copies) gives each pair's unpadded logits, graph logits, E and
    stage sizes (eval mode; exact up to float32 rounding)."""
    torch.manual_seed(9)
    net = tiny(num_stages=3, attention_keys=40).eval()
    pairs = [synthetic_batch(1, n, seed=n)["xs"][0] for n in (200, 90)]
    copies = pairs[1][torch.randint(90, (110,), generator=torch.Generator().manual_seed(0))]
    x = torch.stack([pairs[0], torch.cat([pairs[1], copies])])  # padded as PairCollator does
    mask = torch.arange(200) < torch.tensor([[200], [90]])
    with torch.no_grad():
        padded = net(x, mask)
        for b, p in enumerate(pairs):
            single = net(p[None])
            n = len(p)
            assert torch.allclose(
                padded["logits"][b, :n], single["logits"][0], atol=1e-5, rtol=1e-4
            )
            assert torch.allclose(padded["E"][b], single["E"][0], atol=1e-5)
            assert torch.equal(padded["weights"][b, n:], torch.zeros(200 - n))
            for s, (idx, m) in enumerate(zip(padded["stage_indices"], padded["stage_masks"])):
                kept = int(m[b].sum())
                assert kept == single["stage_indices"][s].shape[-1]
                assert torch.equal(idx[b, :kept], single["stage_indices"][s][0])
                assert torch.allclose(
                    padded["graph_logits"][s][b, :kept],
                    single["graph_logits"][s][0],
                    atol=1e-5,
                    rtol=1e-4,
                )
    # Without the mask the copies do change the short pair's logits.
    with torch.no_grad():
        unmasked = net(x)["logits"][1, :90]
    assert not torch.allclose(unmasked, net(pairs[1][None])["logits"][0], atol=1e-3)
    with pytest.raises(ValueError, match="at least 8 real"):
        net(x, torch.arange(200) < torch.tensor([[200], [5]]))
    with pytest.raises(ValueError, match="mask"):
        net(x, mask.float())


def test_roc_auc_matches_pairwise_count():
    g = torch.Generator().manual_seed(10)
    scores = torch.randint(0, 6, (300,), generator=g).double()  # many ties
    labels = torch.rand(300, generator=g) < 0.3
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None] - neg[None]
    expected = ((diff > 0).double() + 0.5 * (diff == 0).double()).mean()
    assert abs(roc_auc(scores.numpy(), labels.numpy()) - float(expected)) < 1e-12
    assert roc_auc([0.1, 0.9], [False, True]) == 1.0 and roc_auc([0.0, 0.0], [True, False]) == 0.5
    assert roc_auc([1.0, 2.0], [True, True]) != roc_auc([1.0, 2.0], [True, True])  # NaN


@pytest.fixture(scope="module")
def graph_trained():
    """Tiny CorrNet after 80 steps on fresh synthetic batches (4 pairs x 256 matches, half
    outliers), one thread; returns the net and 8 held-out pairs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(11)
        net = tiny().train()
        loss = CorrNetLoss(essential_warmup=10**9)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for step in range(80):
            batch = synthetic_batch(4, 256, seed=100 + step)
            total, _ = loss(net(batch["xs"]), batch, step)
            opt.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        held_out = synthetic_batch(8, 256, seed=99)
        yield (
            net.eval(),
            [{"features": f, "labels": y} for f, y in zip(held_out["xs"], held_out["labels"])],
        )
    finally:
        torch.set_num_threads(threads)


def test_graph_weights_separate_inliers_after_training(graph_trained):
    net, pairs = graph_trained
    stats = graph_liveness(net, pairs)
    assert len(stats) == 2
    for stage in stats:  # measured: AUC 0.89 / 0.89 after 50 steps, 0.93 / 0.91 after 100
        assert stage["auc"] > 0.8 and stage["auc_pair_mean"] > 0.8
        assert 0.05 < stage["open"] < 1.0
    # The gates start open (GRAPH_GATE_BIAS), so the graph passes gradients from step 0.
    torch.manual_seed(11)
    assert all(s["open"] > 0.95 for s in graph_liveness(tiny(), pairs))


def test_trained_laplacian_changes_the_features(graph_trained):
    net, pairs = graph_trained
    seen = []
    hook = net.stages[0].graph.register_forward_hook(lambda m, args, out: seen.append(args))
    try:
        with torch.no_grad():
            net(pairs[0]["features"][None])
    finally:
        hook.remove()
    x, w, _ = seen[0]
    lx = laplacian_aggregate(x, w)
    change = ((lx - x).norm() / x.norm()).item()
    assert change > 0.1, change  # measured 0.23
    assert torch.equal(laplacian_aggregate(x, torch.full_like(w, -1.0)), x)  # closed gates: L = I


def test_float64_input_and_non_finite_pairs():
    """float64 matches run in the network's dtype; a NaN pair is named, not an eigh failure."""
    model = tiny().eval()
    x = make_problem(2, 64, outliers=20)["x"]  # float64
    with torch.no_grad():
        assert torch.equal(model(x)["logits"], model(x.float())["logits"])
        x[1, 5, 2] = float("nan")
        with pytest.raises(ValueError, match=r"NaN or infinite values in pair\(s\) \[1\]"):
            model(x)


def test_label_px_keeps_the_labelled_inliers_within_that_many_pixels():
    p = make_problem(batch=2, n=60, seed=3, outliers=10)
    g = torch.Generator().manual_seed(0)
    xs = p["x"] + 0.004 * torch.rand(p["x"].shape, generator=g, dtype=torch.float64)  # ~0-3 px off
    K = torch.tensor([[600.0, 0, 320], [0, 500, 240], [0, 0, 1]], dtype=torch.float64).expand(
        2, 3, 3
    )
    batch = {
        "xs": xs.float(),
        "R": p["R"].float(),
        "t": p["t"].float(),
        "K1": K.float(),
        "K2": K.float(),
        "labels": p["labels"].float(),
    }
    assert torch.equal(CorrNetLoss().targets(batch), p["labels"])
    d = pixel_sampson_distance(xs, essential_from_pose(p["R"], p["t"]), K, K)  # float64 reference
    got = CorrNetLoss(label_px=1.5).targets(batch)
    assert torch.equal(got, p["labels"] & (d < 1.5**2))
    assert 0 < got.sum() < p["labels"].sum()
    with pytest.raises(ValueError, match="label_px"):
        CorrNetLoss(label_px=1.0, task=get_task("rigid"))
