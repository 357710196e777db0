"""Symmetric inference: the input of the swapped pair against the input built from swapped
keypoints, the predictor against the two forward passes it averages, and order invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corrnet.channels import CHANNELS, network_input, swap_views
from corrnet.errors import UserError
from corrnet.geometry import weighted_eight_point
from corrnet.models import CorrNet, CorrNetConfig, make_predictor
from tests.test_gpu_path import pairs, tiny

GEOMETRY = ["ratio", "mutual", "log_scale_ratio", "orientation", "descriptor_distance"]


def test_swapped_input_equals_the_input_of_the_swapped_keypoints():
    rng = np.random.default_rng(0)
    n = 40
    xs = torch.as_tensor(rng.normal(size=(n, 4)))
    per_match = {
        "ratios": torch.as_tensor(rng.uniform(0.1, 1.0, n)),
        "mutuals": torch.as_tensor((rng.random(n) < 0.5) * 1.0),
        "sizes": torch.as_tensor(rng.uniform(1.5, 60.0, (n, 2))),
        "angles": torch.as_tensor(rng.uniform(0.0, 360.0, (n, 2))),
        "dists": torch.as_tensor(np.sort(rng.uniform(20.0, 600.0, (n, 2)), 1)),
    }
    swapped = {
        **per_match,
        "sizes": per_match["sizes"].flip(-1),
        "angles": per_match["angles"].flip(-1),
    }
    for names in (list(CHANNELS), ["orientation", "ratio"], [], True):
        x = network_input(xs, per_match, names)
        expected = network_input(xs[:, [2, 3, 0, 1]], swapped, names)
        torch.testing.assert_close(swap_views(x, names), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(swap_views(swap_views(x, names), names), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="expected 4 \\+ 2 columns"):
        swap_views(xs, True)


@pytest.mark.parametrize("side_info", [True, GEOMETRY])
def test_symmetric_predictor_averages_the_two_image_orders(side_info):
    net = tiny(side_info=side_info)
    x, mask = pairs([300, 230], side_info=side_info)
    symmetric = make_predictor(net, symmetric=True)
    for m in (None, mask):
        out = symmetric(x, m)
        with torch.inference_mode():
            forward = net(x, m)
            backward = net(swap_views(x, side_info), m)
        logits = (forward["logits"] + backward["logits"]) / 2
        weights = (forward["weights"] + backward["weights"]) / 2
        real = slice(None) if m is None else m
        torch.testing.assert_close(out["logits"][real], logits[real], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out["weights"][real], weights[real], rtol=1e-5, atol=1e-5)
        E = weighted_eight_point(x[..., :4], weights)
        cos = torch.einsum("bij,bij->b", out["E"], E) / (
            out["E"].norm(dim=(1, 2)) * E.norm(dim=(1, 2))
        )
        torch.testing.assert_close(cos.abs(), torch.ones(2), rtol=0, atol=1e-4)


def test_symmetric_scores_do_not_depend_on_the_image_order():
    net = tiny(side_info=GEOMETRY)
    x, _ = pairs([256, 256], side_info=GEOMETRY)
    symmetric = make_predictor(net, symmetric=True)
    out = symmetric(x)
    back = symmetric(swap_views(x, GEOMETRY))
    torch.testing.assert_close(back["logits"], out["logits"], rtol=1e-5, atol=1e-5)
    # E of the swapped pair is E transposed (up to sign and scale).
    E, Et = out["E"], back["E"].transpose(1, 2)
    cos = torch.einsum("bij,bij->b", E, Et) / (E.norm(dim=(1, 2)) * Et.norm(dim=(1, 2)))
    torch.testing.assert_close(cos.abs(), torch.ones(2), rtol=0, atol=1e-4)
    plain = make_predictor(net)(x)["logits"]
    assert not torch.allclose(plain, out["logits"], atol=1e-3)


def test_symmetric_inference_needs_two_views():
    net = CorrNet(CorrNetConfig(geometry="rigid", width=16, heads=2, num_states=2))
    with pytest.raises(UserError, match="symmetric: expected a two-view network"):
        make_predictor(net, symmetric=True)
