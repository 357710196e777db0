"""OANet HDF5 reader and writer, and batching."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from corrnet.datasets import (
    BadPairError,
    OANetPairs,
    PairCollator,
    collate_pairs,
    generate_pair,
    make_sample,
    merge_oanet_hdf5,
    write_oanet_hdf5,
)
from corrnet.datasets.oanet_hdf5 import SIFT_KEYS, write_pairs_hdf5
from tests._data_reference import episym_np


def _oanet_file(path, pairs: list[dict], extra: bool = True) -> None:
    """Write a file the way OANet's dump code does (plain h5py, OANet's shapes)."""
    with h5py.File(path, "w") as f:
        keys = (
            ["xs", "ys", "Rs", "ts"]
            + (["ratios", "mutuals", "cx1s", "cy1s", "cx2s", "cy2s", "f1s", "f2s"] if extra else [])
            + [k for k in SIFT_KEYS if extra and k in pairs[0]]
        )
        groups = {k: f.create_group(k) for k in keys}
        for i, p in enumerate(pairs):
            for k in keys:
                groups[k].create_dataset(str(i), data=np.asarray(p[k], np.float32))


def _raw_pair(rng: np.random.Generator, n: int = 50) -> dict:
    R = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    R *= np.linalg.det(R)
    t = rng.normal(size=(3, 1))
    xs = rng.normal(size=(1, n, 4)) * 0.3
    return {
        "xs": xs,
        "ys": episym_np(xs[0], R, t[:, 0] / np.linalg.norm(t))[:, None],
        "Rs": R,
        "ts": t,
        "ratios": rng.uniform(size=n),
        "mutuals": (rng.uniform(size=n) < 0.5) * 1.0,
        "cx1s": [320.5],
        "cy1s": [240.0],
        "cx2s": [500.0],
        "cy2s": [380.0],
        "f1s": [[600.0, 601.0]],
        "f2s": [[900.0, 905.0]],
        "sizes": rng.uniform(1.5, 40.0, size=(n, 2)),
        "angles": rng.uniform(0.0, 360.0, size=(n, 2)),
        "dists": np.sort(rng.uniform(50.0, 500.0, size=(n, 2)), 1),
    }


def test_reads_oanet_written_file(tmp_path):
    rng = np.random.default_rng(0)
    raw = [_raw_pair(rng) for _ in range(3)]
    _oanet_file(tmp_path / "a.hdf5", raw)
    data = OANetPairs(tmp_path / "a.hdf5", side_info=True)
    assert len(data) == 3
    s = data[1]
    np.testing.assert_allclose(s["xs"].numpy(), raw[1]["xs"][0].astype(np.float32))
    np.testing.assert_allclose(
        s["t"].numpy(), raw[1]["ts"][:, 0] / np.linalg.norm(raw[1]["ts"]), rtol=1e-6
    )
    np.testing.assert_array_equal(
        s["labels"].numpy(), (raw[1]["ys"][:, 0].astype(np.float32) < 1e-4) * 1.0
    )
    np.testing.assert_allclose(s["K1"].numpy(), [[600, 0, 320.5], [0, 601, 240], [0, 0, 1]])
    np.testing.assert_allclose(s["K2"].numpy(), [[900, 0, 500], [0, 905, 380], [0, 0, 1]])
    assert s["features"].shape == (50, 6) and int(s["index"]) == 1 and "image1" not in s
    for key in SIFT_KEYS:  # what SIFT measured, (N, 2) per match, read when present
        np.testing.assert_array_equal(s[key].numpy(), raw[1][key].astype(np.float32))
    # a minimal file (OANet's training dumps without side info or intrinsics)
    _oanet_file(tmp_path / "b.hdf5", raw, extra=False)
    data = OANetPairs(tmp_path / "b.hdf5")
    s = data[0]
    assert torch.equal(s["K1"], torch.eye(3)) and torch.equal(s["ratios"], torch.zeros(50))
    assert torch.equal(s["features"], s["xs"]) and not set(SIFT_KEYS) & set(s)
    assert data.lacks(["ratios", "f1s", "xs"]) == ["ratios", "f1s"]
    # the side-information channels cannot stand in as zeros
    with pytest.raises(
        BadPairError,
        match=r"b.hdf5: missing key\(s\) \['ratios', 'mutuals'\], the network's side_info",
    ):
        OANetPairs(tmp_path / "b.hdf5", side_info=True)


def test_written_file_has_oanet_layout_and_round_trips(tmp_path):
    samples = [generate_pair(2, i, "mixed", 100 + 10 * i) for i in range(3)]
    samples[0]["image1"], samples[0]["image2"] = "a.jpg", "b.jpg"
    path = tmp_path / "w.hdf5"
    assert write_oanet_hdf5(path, samples) == 3
    with h5py.File(path, "r") as f:  # how OANet's loader sees it
        assert "image1s" not in f  # only written when every pair has images
        n = 110
        shapes = {
            "xs": (1, n, 4),
            "ys": (n, 1),
            "Rs": (3, 3),
            "ts": (3, 1),
            "ratios": (n,),
            "mutuals": (n,),
            "cx1s": (1,),
            "cy1s": (1,),
            "cx2s": (1,),
            "cy2s": (1,),
            "f1s": (1, 2),
            "f2s": (1, 2),
        }
        for key, shape in shapes.items():
            assert f[key]["1"].shape == shape and f[key]["1"].dtype == np.float32, key
        np.testing.assert_array_equal(
            f["f2s"]["1"][()][0], samples[1]["K2"].numpy()[[0, 1], [0, 1]]
        )
    data = OANetPairs(path)
    for i, ref in enumerate(samples):
        got = data[i]
        for key in ("xs", "ys", "labels", "R", "t", "ratios", "mutuals", "K1", "K2", "index"):
            assert torch.equal(got[key], ref[key]), key
    samples[1]["image1"], samples[1]["image2"] = samples[2]["image1"], samples[2]["image2"] = (
        "c",
        "d",
    )
    write_oanet_hdf5(path, samples)
    assert OANetPairs(path)[2]["image2"] == "d" and OANetPairs(path)[0]["image1"] == "a.jpg"


def test_shared_writer_keeps_its_groups_and_strings_only_every_pair_has(tmp_path):
    def arrays(sample: dict, i: int) -> dict:
        if sample["x"] is None:
            raise ValueError("x: missing")
        return {
            "x": np.full(2, sample["x"], np.float32),
            "name": f"p{i}",
            **sample.get("extra", {}),
        }

    path = tmp_path / "w.hdf5"
    samples = [{"x": 1.0, "extra": {"note": "a"}}, {"x": 2.0}, {"x": 3.0, "extra": {"note": "c"}}]
    assert (
        write_pairs_hdf5(
            path, samples, arrays, ("x", "name"), attrs={"kind": "test"}, progress=False
        )
        == 3
    )
    with h5py.File(path) as f:
        assert (
            sorted(f) == ["name", "x"] and f.attrs["kind"] == "test"
        )  # "note": not every pair has it
        assert f["name"]["2"][()].decode() == "p2" and f["x"]["1"].dtype == np.float32
    assert write_pairs_hdf5(path, [], arrays, ("x", "name"), progress=False) == 0
    with h5py.File(path) as f:
        assert sorted(f) == ["name", "x"] and len(f["x"]) == 0
    with pytest.raises(ValueError, match=r"w.hdf5: pair 1: x: missing"):
        write_pairs_hdf5(path, [{"x": 1.0}, {"x": None}], arrays, ("x",), progress=False)


def test_merge_keeps_every_pair_in_order(tmp_path):
    rng = np.random.default_rng(5)
    raw = [_raw_pair(rng, 20 + i) for i in range(5)]
    _oanet_file(tmp_path / "a.hdf5", raw[:2])
    _oanet_file(tmp_path / "b.hdf5", raw[2:])
    assert merge_oanet_hdf5([tmp_path / "a.hdf5", tmp_path / "b.hdf5"], tmp_path / "m.hdf5") == 5
    merged = OANetPairs(tmp_path / "m.hdf5")
    inputs = [OANetPairs(tmp_path / "a.hdf5")[i] for i in range(2)] + [
        OANetPairs(tmp_path / "b.hdf5")[i] for i in range(3)
    ]
    assert len(merged) == 5
    for i, ref in enumerate(inputs):
        got = merged[i]
        for key in ("xs", "ys", "labels", "R", "t", "ratios", "mutuals", "K1", "K2"):
            assert torch.equal(got[key], ref[key]), (i, key)
    with h5py.File(tmp_path / "m.hdf5") as f:
        assert f.attrs["merged_from"] == f"{tmp_path / 'a.hdf5'}: 2; {tmp_path / 'b.hdf5'}: 3"
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        merge_oanet_hdf5([tmp_path / "a.hdf5", tmp_path / "nope.hdf5"], tmp_path / "n.hdf5")
    assert not (tmp_path / "n.hdf5").exists()


def test_write_is_atomic(tmp_path):
    path = tmp_path / "atomic.hdf5"

    def interrupted():
        yield generate_pair(0, 0, "indoor", 50)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_oanet_hdf5(path, interrupted())
    assert list(tmp_path.iterdir()) == []
    write_oanet_hdf5(path, [generate_pair(0, 0, "indoor", 50)])
    with pytest.raises(KeyboardInterrupt):
        write_oanet_hdf5(path, interrupted())
    assert len(OANetPairs(path)) == 1 and [p.name for p in tmp_path.iterdir()] == ["atomic.hdf5"]


def _broken(tmp_path, name: str, edit) -> str:
    rng = np.random.default_rng(1)
    raw = [_raw_pair(rng) for _ in range(4)]
    edit(raw)
    path = tmp_path / f"{name}.hdf5"
    _oanet_file(path, raw)
    return path


@pytest.mark.parametrize(
    "name, edit, message",
    [
        (
            "shape",
            lambda r: r[2].update(xs=r[2]["xs"][0]),
            r"pair 2: xs: expected shape \(1, N, 4\), got \(50, 4\)",
        ),
        (
            "nan",
            lambda r: r[2]["xs"].__setitem__((0, 3, 1), np.nan),
            r"pair 2: xs: expected finite",
        ),
        (
            "few",
            lambda r: r[2].update(
                xs=r[2]["xs"][:, :5],
                ys=r[2]["ys"][:5],
                ratios=r[2]["ratios"][:5],
                mutuals=r[2]["mutuals"][:5],
            ),
            r"pair 2: xs: expected at least 8 matches, got 5",
        ),
        (
            "ys",
            lambda r: r[2].update(ys=r[2]["ys"][:7]),
            r"pair 2: ys: expected shape \(50, 1\) or \(50,\), got \(7, 1\)",
        ),
        (
            "sizes",
            lambda r: r[2].update(sizes=r[2]["sizes"][:, 0]),
            r"pair 2: sizes: expected shape \(50, 2\), got \(50,\)",
        ),
        (
            "angles",
            lambda r: r[2]["angles"].__setitem__((4, 1), np.inf),
            r"pair 2: angles: expected finite",
        ),
        (
            "scale",
            lambda r: r[2]["sizes"].__setitem__((4, 1), 0.0),
            r"pair 2: sizes: expected positive",
        ),
        (
            "dists",
            lambda r: r[2]["dists"].__setitem__((4, 0), -1.0),
            r"pair 2: dists: expected descriptor distances >= 0",
        ),
    ],
)
def test_bad_pairs_raise_or_skip(tmp_path, name, edit, message):
    path = _broken(tmp_path, name, edit)
    data = OANetPairs(path)
    data[1]
    with pytest.raises(BadPairError, match=f"{name}.hdf5: {message}"):
        data[2]
    with pytest.warns(UserWarning, match="skipped 1 of 4 bad pairs"):
        skipping = OANetPairs(path, on_bad="skip")
    assert len(skipping) == 3 and [int(s["index"]) for s in skipping] == [0, 1, 3]


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.hdf5: HDF5 file not found"):
        OANetPairs(tmp_path / "nope.hdf5")
    with h5py.File(tmp_path / "k.hdf5", "w") as f:
        f.create_group("xs")
        f.create_group("ys")
    with pytest.raises(BadPairError, match=r"k.hdf5: missing key\(s\) \['Rs', 'ts'\]"):
        OANetPairs(tmp_path / "k.hdf5")
    _oanet_file(tmp_path / "m.hdf5", [_raw_pair(np.random.default_rng(2))])
    with h5py.File(tmp_path / "m.hdf5", "a") as f:
        del f["ts"]["0"]
    with pytest.raises(BadPairError, match=r"m.hdf5: group 'ts' has 0 pairs, expected 1 like 'xs'"):
        OANetPairs(tmp_path / "m.hdf5")
    with pytest.raises(ValueError, match="on_bad"):
        OANetPairs(tmp_path / "k.hdf5", on_bad="ignore")
    (tmp_path / "text.hdf5").write_text("not HDF5")
    with pytest.raises(OSError, match="text.hdf5: cannot open as an HDF5 file"):
        OANetPairs(tmp_path / "text.hdf5")


def test_write_rejects_bad_samples_naming_pair_and_key(tmp_path):
    good = generate_pair(0, 0, "indoor", 20)
    short = dict(good, ratios=good["ratios"][:5])
    with pytest.raises(
        ValueError, match=r"bad.hdf5: pair 1: ratios: expected shape \(20,\) .*got \(5,\)"
    ):
        write_oanet_hdf5(tmp_path / "bad.hdf5", [good, short])
    partial = {k: v for k, v in good.items() if k != "K2"}
    with pytest.raises(ValueError, match=r"bad.hdf5: pair 0: missing key\(s\) \['K2'\]"):
        write_oanet_hdf5(tmp_path / "bad.hdf5", [partial])
    assert list(tmp_path.iterdir()) == []


def test_dataloader_workers(tmp_path):
    path = tmp_path / "w.hdf5"
    write_oanet_hdf5(path, [generate_pair(4, i, "mixed", 60 + i) for i in range(8)])
    data = OANetPairs(path, side_info=True)
    data[0]  # opens a handle in the parent; workers must open their own
    loader = DataLoader(data, batch_size=4, num_workers=2, collate_fn=PairCollator(seed=1))
    batches = list(loader)
    assert [b["xs"].shape for b in batches] == [(4, 60, 4), (4, 64, 4)]
    assert batches[1]["features"].shape == (4, 64, 6)
    assert torch.equal(torch.cat([b["index"] for b in batches]), torch.arange(8))


def test_collate_subsample_draws_real_rows_without_replacement():
    batch = [generate_pair(9, i, "outdoor", n, side_info=True) for i, n in enumerate((40, 30, 55))]
    for (
        s
    ) in batch:  # unique row tags: synthetic pairs hold exact duplicate matches, as real ones do
        s["ratios"] = torch.arange(len(s["xs"]), dtype=torch.float32) / len(s["xs"])
        s["features"] = torch.cat([s["xs"], s["ratios"][:, None], s["mutuals"][:, None]], 1)
    out = collate_pairs(batch, generator=torch.Generator().manual_seed(0))
    assert out["xs"].shape == (3, 30, 4) and out["features"].shape == (3, 30, 6)
    assert out["mask"].all() and out["R"].shape == (3, 3, 3) and out["index"].tolist() == [0, 1, 2]
    for b, s in enumerate(batch):
        rows = [int((s["features"] == x).all(1).nonzero()) for x in out["features"][b]]
        assert len(set(rows)) == 30
        for key in ("ys", "labels", "ratios", "mutuals"):
            assert torch.equal(out[key][b], s[key][rows]), key
    assert torch.equal(
        out["xs"][1].sort(0).values, batch[1]["xs"].sort(0).values
    )  # smallest: all kept
    fixed = collate_pairs(batch, num_matches=35, generator=torch.Generator().manual_seed(0))
    assert fixed["xs"].shape == (3, 35, 4) and fixed["mask"].sum(1).tolist() == [35, 30, 35]
    assert_padding_repeats_real_matches(fixed, 1, batch[1], 30)


def assert_padding_repeats_real_matches(out: dict, b: int, sample: dict, size: int) -> None:
    """Padded rows of pair b are whole copies of the pair's real rows, masked out."""
    assert not out["mask"][b, size:].any() and out["mask"][b, :size].all()
    for x, label in zip(out["xs"][b, size:], out["labels"][b, size:]):
        row = (sample["xs"] == x).all(1).nonzero()
        assert len(row) == 1 and label == sample["labels"][int(row)]


def test_collate_pad_and_collator_seed():
    batch = [generate_pair(9, i, "indoor", n) for i, n in enumerate((40, 30))]
    batch[0]["image1"], batch[1]["image1"] = "x.jpg", "y.jpg"
    batch[0]["image2"], batch[1]["image2"] = "u.jpg", "v.jpg"
    out = collate_pairs(batch, mode="pad")
    assert out["xs"].shape == (2, 40, 4) and out["mask"].sum(1).tolist() == [40, 30]
    assert torch.equal(out["xs"][1, :30], batch[1]["xs"]) and out["image1"] == ["x.jpg", "y.jpg"]
    assert_padding_repeats_real_matches(out, 1, batch[1], 30)
    a, b, c = PairCollator(seed=3), PairCollator(seed=3), PairCollator(seed=4)
    assert torch.equal(a(batch)["xs"], b(batch)["xs"]) and not torch.equal(
        a(batch)["xs"], c(batch)["xs"]
    )
    with pytest.raises(ValueError, match="mode"):
        PairCollator(mode="crop")


def test_labels_at_threshold_survive_round_trip(tmp_path):
    s = generate_pair(0, 1, "indoor", 12)
    ys = np.full(12, 1e-4) * (1 + np.linspace(-1e-9, 1e-9, 12))  # straddles 1e-4, one float32 value
    sample = make_sample(
        s["xs"].numpy(),
        ys,
        s["R"].numpy(),
        s["t"].numpy(),
        s["ratios"].numpy(),
        s["mutuals"].numpy(),
        s["K1"].numpy(),
        s["K2"].numpy(),
        1,
    )
    assert sample["labels"].unique().numel() == 1
    write_oanet_hdf5(tmp_path / "t.hdf5", [sample])
    assert torch.equal(OANetPairs(tmp_path / "t.hdf5")[0]["labels"], sample["labels"])


def test_sift_keys_round_trip_and_every_pair_needs_them(tmp_path):
    """sizes / angles / dists are written (N, 2) float32 when the first sample has them; a later
    sample without them is refused naming the pair and the key."""
    rng = np.random.default_rng(5)
    samples = [generate_pair(1, i, "mixed", 40) for i in range(2)]
    for s in samples:
        for key in SIFT_KEYS:
            s[key] = torch.as_tensor(rng.uniform(1.0, 300.0, size=(40, 2)), dtype=torch.float32)
    path = tmp_path / "sift.hdf5"
    assert write_oanet_hdf5(path, samples) == 2
    with h5py.File(path, "r") as f:
        for key in SIFT_KEYS:
            assert f[key]["1"].shape == (40, 2) and f[key]["1"].dtype == np.float32, key
    for got, ref in zip(OANetPairs(path), samples):
        for key in SIFT_KEYS:
            assert torch.equal(got[key], ref[key]), key
    lacking = {k: v for k, v in samples[1].items() if k != "angles"}
    with pytest.raises(ValueError, match=r"sift.hdf5: pair 1: missing key\(s\) \['angles'\]"):
        write_oanet_hdf5(path, [samples[0], lacking])
    batch = collate_pairs([OANetPairs(path)[i] for i in range(2)], num_matches=30)
    assert batch["sizes"].shape == (2, 30, 2)
