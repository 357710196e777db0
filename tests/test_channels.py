"""Named input channels: the input builder against closed forms, the configuration, the refusal
of a file without the keys, and the shipped weights giving the outputs they gave before."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from corrnet.channels import (
    CHANNELS,
    DESCRIPTOR_SCALE,
    channel_count,
    channel_keys,
    network_input,
    side_info_channels,
)
from corrnet.checkpoint import load_model
from corrnet.datasets import BadPairError, OANetPairs, write_oanet_hdf5
from corrnet.datasets.factory import check_data_spec, open_dataset
from corrnet.datasets.oanet_hdf5 import SIFT_KEYS
from corrnet.geometry.eigen import canonical_sign
from corrnet.models import CorrNet, CorrNetConfig

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).parent / "data" / "pretrained_outputs.pt"
"""A fixed input and the outputs of the three shipped weights on it, computed by the code before
the channels had names (``side_info`` a bool)."""


def _per_match(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "ratios": rng.uniform(0.1, 1.0, n),
        "mutuals": (rng.random(n) < 0.5) * 1.0,
        "sizes": rng.uniform(1.5, 60.0, (n, 2)),
        "angles": rng.uniform(0.0, 360.0, (n, 2)),
        "dists": np.sort(rng.uniform(20.0, 600.0, (n, 2)), 1),
    }


def test_network_input_columns_equal_their_closed_forms():
    rng = np.random.default_rng(0)
    a = _per_match(rng, 50)
    xs = rng.normal(size=(50, 4))
    t = {k: torch.as_tensor(v) for k, v in a.items()}
    names = ["descriptor_distance", "orientation", "ratio", "log_scale_ratio", "mutual"]
    x = network_input(torch.as_tensor(xs), t, names).numpy()
    turn = np.deg2rad(a["angles"][:, 1] - a["angles"][:, 0])
    expected = np.c_[
        xs,
        a["dists"][:, 0] / 512.0,
        np.sin(turn),
        np.cos(turn),
        a["ratios"],
        np.log(a["sizes"][:, 1] / a["sizes"][:, 0]),
        a["mutuals"],
    ]
    np.testing.assert_allclose(x, expected, rtol=1e-12, atol=1e-12)
    assert x.shape[1] == 4 + channel_count(names) == 4 + 6
    # side_info true: [xs, ratio, mutual] as before, bit for bit; false: xs itself
    xs32 = torch.as_tensor(xs, dtype=torch.float32)
    t32 = {k: v.float() for k, v in t.items()}
    old = torch.cat([xs32, t32["ratios"][:, None], t32["mutuals"][:, None]], 1)
    assert torch.equal(network_input(xs32, t32, True), old)
    assert torch.equal(network_input(xs32, t32, ["ratio", "mutual"]), old)
    assert network_input(xs32, t32, False) is xs32
    # batched (B, N, ...) inputs give the rows of the unbatched ones
    two = {k: torch.stack([v.flip(0), v]) for k, v in t32.items()}
    batched = network_input(torch.stack([xs32.flip(0), xs32]), two, names)
    assert torch.equal(batched[1], network_input(xs32, t32, names))
    with pytest.raises(KeyError, match="channel 'orientation' needs the per-match key 'angles'"):
        network_input(xs32, {"ratios": t32["ratios"]}, ["ratio", "orientation"])


def test_side_info_names_and_the_configuration():
    assert side_info_channels(True) == ("ratio", "mutual") and side_info_channels(False) == ()
    assert channel_keys(["orientation", "log_scale_ratio"]) == ("angles", "sizes")
    assert set(CHANNELS) == {
        "ratio",
        "mutual",
        "log_scale_ratio",
        "orientation",
        "descriptor_distance",
    }
    assert DESCRIPTOR_SCALE == 512.0
    config = CorrNetConfig(side_info=["ratio", "orientation", "descriptor_distance"])
    assert config.in_channels == 4 + 1 + 2 + 1 and config.channels == config.side_info
    assert CorrNet(config).stages[0].embed.in_channels == 8
    assert CorrNetConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["side_info"] == ["ratio", "orientation", "descriptor_distance"]
    assert CorrNetConfig(side_info=True).to_dict()["side_info"] is True  # old files unchanged
    assert CorrNetConfig(side_info=True).in_channels == 6
    assert CorrNetConfig(side_info=["ratio", "mutual"]).in_channels == 6
    assert CorrNetConfig(side_info=True, geometry="rigid").in_channels == 8
    with pytest.raises(ValueError, match=r"model.net.side_info: unknown channel\(s\) \['scale'\]"):
        CorrNetConfig(side_info=["ratio", "scale"])
    with pytest.raises(ValueError, match="model.net.side_info: expected each channel once"):
        CorrNetConfig(side_info=["ratio", "ratio"])
    with pytest.raises(ValueError, match="model.net.side_info: expected true, false or a list"):
        CorrNetConfig(side_info="ratio")
    with pytest.raises(ValueError, match="model.net.side_info: expected channels of 3-D pairs"):
        CorrNetConfig(side_info=["orientation"], geometry="rigid")


def _file(path: Path, with_sift: bool) -> Path:
    from corrnet.datasets import generate_pair

    samples = [generate_pair(4, i, "mixed", 60) for i in range(2)]
    if not with_sift:
        samples = [{k: v for k, v in s.items() if k not in SIFT_KEYS} for s in samples]
    write_oanet_hdf5(path, samples)
    return path


def test_a_file_without_the_keys_of_a_channel_is_refused_in_one_line(tmp_path):
    bare = _file(tmp_path / "bare.hdf5", with_sift=False)
    assert len(OANetPairs(bare, side_info=True)) == 2  # ratio and mutual need no new keys
    message = (
        r"bare.hdf5: missing key\(s\) \['angles', 'dists'\], the network's side_info input "
        r"\(channels \['ratio', 'orientation', 'descriptor_distance'\]\)"
    )
    for refuse in (
        OANetPairs,
        check_data_spec,
        lambda p, side_info: open_dataset(str(p), "test", side_info=side_info),
    ):
        with pytest.raises(BadPairError, match=message) as err:
            refuse(bare, side_info=["ratio", "orientation", "descriptor_distance"])
        assert "\n" not in str(err.value)
    full = _file(tmp_path / "full.hdf5", with_sift=True)
    names = ["log_scale_ratio", "orientation", "descriptor_distance", "ratio"]
    s = OANetPairs(full, side_info=names)[1]
    assert s["features"].shape == (60, 4 + 5)
    assert torch.equal(s["features"], network_input(s["xs"], s, names))


@pytest.mark.parametrize("name", ["corrnet-real", "corrnet-synthetic", "corrnet-registration"])
def test_shipped_weights_give_the_outputs_of_the_code_before_named_channels(name):
    """Bit-identical to the outputs saved by the code whose ``side_info`` was a bool, with the input
    built by :func:`network_input` from ``side_info: true`` and from its list spelled out; E,
    saved from ``torch.linalg.eigh`` with LAPACK's sign, is now the sync-free solver's with the
    canonical sign: the same within float32 rounding; R, t, saved from the SVD Kabsch, are now
    Horn's sync-free rotation's: the same within float64 rounding."""
    ref = torch.load(REFERENCE, weights_only=True)[name]
    model = load_model(ROOT / "corrnet" / "pretrained" / f"{name}.pt")
    assert model.config.side_info is True and model.config.channels == ("ratio", "mutual")
    spelled = CorrNet(CorrNetConfig(**{**model.config.to_dict(), "side_info": ["ratio", "mutual"]}))
    spelled.load_state_dict(model.state_dict())
    spelled.eval()
    xs, per_match = ref["xs"], {"ratios": ref["ratios"], "mutuals": ref["mutuals"]}
    for net, side_info in ((model, model.config.side_info), (spelled, spelled.config.side_info)):
        with torch.no_grad():
            out = net(network_input(xs, per_match, side_info)[None])
        for key in ("logits", "weights"):
            if key in ref:
                assert torch.equal(out[key], ref[key]), (name, key)
        for key in ("R", "t"):
            if key in ref:
                torch.testing.assert_close(out[key], ref[key], atol=1e-14, rtol=0)
        if "E" in ref:
            E = canonical_sign(ref["E"].flatten(-2)).reshape(ref["E"].shape)
            torch.testing.assert_close(out["E"], E, atol=1e-7, rtol=0)


def test_prepared_file_keys_read_by_open_dataset(tmp_path):
    """The keys written by the writer reach the model's input through the factory."""
    full = _file(tmp_path / "f.hdf5", with_sift=True)
    with h5py.File(full, "r") as f:
        assert all(k in f for k in SIFT_KEYS)
    data = open_dataset(str(full), "test", side_info=["orientation"])
    s = data[0]
    turn = np.deg2rad((s["angles"][:, 1].double() - s["angles"][:, 0].double()).numpy())
    np.testing.assert_allclose(s["features"][:, 4].numpy(), np.sin(turn), atol=1e-5)
