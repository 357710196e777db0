"""train.py end to end on the CPU: a few steps, checkpoints, exact resume, clear errors."""

from __future__ import annotations

import csv
import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from corrnet.channels import network_input
from corrnet.checkpoint import FORMAT_VERSION, PRETRAINED, export_model, load_model
from corrnet.commands.train import CorrNetCLI, main
from corrnet.datasets import collate_pairs, generate_pair
from corrnet.datasets.oanet_hdf5 import INTRINSICS_KEYS
from corrnet.models import CorrNetConfig
from corrnet.training.datamodule import CorrNetDataModule
from corrnet.training.module import CorrNetModule
from tests.test_eval import pair, write_oanet

ROOT = Path(__file__).resolve().parents[1]


def _args(run: Path, max_steps: int) -> list[str]:
    return [
        "--config",
        str(ROOT / "configs/demo.yaml"),
        "--trainer.max_steps",
        str(max_steps),
        "--trainer.val_check_interval",
        "2",
        "--trainer.limit_val_batches",
        "3",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(run),
        "--checkpoint.dirpath",
        str(run / "ckpt"),
        "--trainer.logger.init_args.save_dir",
        str(run),
        "--data.num_workers",
        "0",
        "--data.batch_size",
        "2",
        "--data.num_matches",
        "128",
        "--data.synthetic_val_pairs",
        "3",
    ]


def _logged_steps(run: Path) -> list[int]:
    steps = []
    for f in sorted(run.glob("lightning_logs/version_*/metrics.csv")):
        with open(f) as fh:
            steps.append(
                sorted({int(r["step"]) for r in csv.DictReader(fh) if r.get("train/loss")})
            )
    return steps


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    assert main(_args(run, 4)) == 0
    return run


def test_training_writes_best_and_last_checkpoints(trained):
    names = {p.name for p in (trained / "ckpt").iterdir()}
    assert "last.ckpt" in names and any(n.startswith("best-") for n in names)
    ckpt = torch.load(trained / "ckpt/last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    assert "val/mAP20" in str(ckpt["callbacks"])


def test_resume_continues_exactly_where_it_stopped(trained, tmp_path):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(_args(trained, 6) + ["--ckpt_path", "last"]) == 0
    # Lightning warns that a mid-epoch resume is inexact; here it is exact, so the warning is off
    assert not [w for w in seen if "not resumable" in str(w.message)]
    resumed = torch.load(trained / "ckpt/last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 6
    first, second = _logged_steps(trained)
    assert max(first) < 4 and min(second) >= 4  # the second run did only steps 4 and 5
    # Same data, same order, same subsamples: 4 + 2 steps equal 6 steps in one go.
    assert main(_args(tmp_path, 6)) == 0
    straight = torch.load(tmp_path / "ckpt/last.ckpt", map_location="cpu", weights_only=True)
    for name, value in straight["state_dict"].items():
        assert torch.allclose(resumed["state_dict"][name], value, atol=1e-6), name


@pytest.mark.parametrize("first", [4, 6])
def test_resume_is_exact_at_an_epoch_boundary_and_mid_epoch(tmp_path, first):
    """8 training pairs at batch 2: an epoch is 4 steps; a checkpoint on an epoch's last batch
    (step 4) or mid-epoch (step 6) resumes to step 10 exactly as 10 steps in one go."""
    small = ["--data.synthetic_train_pairs", "8"]
    assert main(_args(tmp_path / "a", first) + small) == 0
    assert main(_args(tmp_path / "a", 10) + small + ["--ckpt_path", "last"]) == 0
    assert main(_args(tmp_path / "b", 10) + small) == 0
    resumed, straight = (
        torch.load(tmp_path / run / "ckpt/last.ckpt", map_location="cpu", weights_only=True)
        for run in ("a", "b")
    )
    assert resumed["global_step"] == straight["global_step"] == 10
    for name, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name


def test_load_and_export_give_the_same_network(trained, tmp_path):
    model = load_model(trained / "ckpt/last.ckpt")
    exported = load_model(
        export_model(trained / "ckpt/last.ckpt", tmp_path / "w.pt", {"cmd": "test"})
    )
    x = torch.randn(1, 64, 4, generator=torch.Generator().manual_seed(0)) * 0.3
    with torch.no_grad():
        assert torch.allclose(model(x)["logits"], exported(x)["logits"], atol=1e-6)


def test_checkpoint_of_another_architecture_is_refused(trained, tmp_path):
    ckpt = torch.load(trained / "ckpt/last.ckpt", map_location="cpu", weights_only=True)
    name = next(k for k, v in ckpt["state_dict"].items() if v.ndim >= 2)
    ckpt["state_dict"][name] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="another architecture"):
        load_model(tmp_path / "other.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt"):
        load_model(tmp_path / "junk.ckpt")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.ckpt")


def test_missing_data_file_is_one_clear_error(tmp_path, capsys):
    code = main(_args(tmp_path, 1) + ["--data.train", str(tmp_path / "nope.hdf5")])
    assert code == 2
    assert "nope.hdf5" in capsys.readouterr().err


@pytest.mark.parametrize(
    "case, message",
    [
        ("corrupt-data", "bad.hdf5: cannot open as an HDF5 file"),
        ("unknown-net-key", "unrecognized arguments: --model.net.widthh"),
        (
            "exported-weights",
            "w.pt: exported weights (corrnet.checkpoint.export_model), not a training checkpoint",
        ),
        ("other-width", "last.ckpt: weights of another architecture"),
        ("no-last", "--ckpt_path last: no "),
        ("pickled", "pickled.ckpt: not a corrnet checkpoint"),
        (
            "label-px-without-intrinsics",
            "noK.hdf5: missing key(s) ['cx1s', 'cy1s', 'cx2s', 'cy2s', 'f1s', 'f2s'], "
            "the intrinsics that model.loss.label_px needs",
        ),
    ],
)
def test_bad_training_input_is_one_line_before_training(trained, tmp_path, capsys, case, message):
    run = tmp_path / "run"
    args = _args(run, 1)
    if case == "corrupt-data":
        (tmp_path / "bad.hdf5").write_text("not HDF5")
        args += ["--data.train", str(tmp_path / "bad.hdf5")]
    elif case == "unknown-net-key":
        args += ["--model.net.widthh", "3"]
    elif case == "exported-weights":
        args += ["--ckpt_path", str(export_model(trained / "ckpt/last.ckpt", tmp_path / "w.pt"))]
    elif case == "other-width":
        args += ["--model.net.width", "16", "--ckpt_path", str(trained / "ckpt/last.ckpt")]
    elif case == "no-last":
        args += ["--ckpt_path", "last"]
    elif case == "label-px-without-intrinsics":  # its pixels would be normalised units
        write_oanet(tmp_path / "noK.hdf5", [pair(60, n=100, inliers=50)], drop=INTRINSICS_KEYS)
        args += ["--data.train", str(tmp_path / "noK.hdf5"), "--model.loss.label_px", "1.0"]
    else:
        torch.save({"state_dict": {}, "loops": np.zeros(1)}, tmp_path / "pickled.ckpt")
        args += ["--ckpt_path", str(tmp_path / "pickled.ckpt")]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("corrnet train: error: ") and message in err[-1], err
    assert "Traceback" not in "\n".join(err) and "weights_only" not in err[-1]
    assert not (run / "ckpt").exists()  # refused before training: nothing started from scratch


def test_shipped_weights_load_without_executing_code():
    model = load_model()  # corrnet/pretrained/corrnet-real.pt, weights_only=True
    x = torch.randn(1, 100, model.in_channels, generator=torch.Generator().manual_seed(0)) * 0.3
    with torch.no_grad():
        out = model(x)
    assert out["logits"].shape == (1, 100) and torch.isfinite(out["logits"]).all()


def test_validation_ignores_padded_copies():
    """Padded copies never count: the precision and recall of a padded batch equal those of the
    prediction on each pair's real matches alone, and its pose errors are those of the masked
    batch, which moving the copies anywhere leaves unchanged."""
    from corrnet.eval.predict import predict
    from corrnet.geometry import pose_errors

    config = load_model(PRETRAINED).config  # trained weights: something is kept and found
    module = CorrNetModule(net=config, init_weights=str(PRETRAINED), reset_graph_heads=False).eval()
    batch = [
        generate_pair(5, i, "outdoor", n, side_info=config.side_info)
        for i, n in enumerate((300, 200))
    ]
    padded = collate_pairs(batch, mode="pad", generator=torch.Generator().manual_seed(0))
    # Make every copy look like a confident inlier: counted, it would inflate all three numbers.
    padded["labels"][~padded["mask"]] = 1.0
    with torch.no_grad():
        module.validation_step(padded, 0)
        out = module(padded["features"], padded["mask"])
    moved = padded["xs"].clone()
    moved[~padded["mask"]] = torch.rand(
        int((~padded["mask"]).sum()), 4, generator=torch.Generator().manual_seed(1)
    )
    errors = []
    for xs in (padded["xs"], moved):
        pred = predict(out["logits"], xs, padded["mask"], weights=out["weights"])
        errors.append(
            torch.maximum(*pose_errors(pred.R, pred.t, padded["R"].double(), padded["t"].double()))
        )
    assert errors[1].tolist() == errors[0].tolist()
    # each pair's pose is not compared with the pair solved alone: the Levenberg-Marquardt steps
    # amplify float noise on a failed pair (1.8 deg here); test_estimators checks that predict
    # is batch-independent before them
    for i, real in enumerate(padded["mask"]):
        pred = predict(
            out["logits"][i, real][None],
            padded["xs"][i, real][None],
            weights=out["weights"][i, real][None],
        )
        labels = padded["labels"][i, real][None] > 0.5
        tp = float((pred.inliers & labels).sum())
        expected = [
            float(errors[0][i]),
            tp / max(int(pred.inliers.sum()), 1),
            tp / int(labels.sum()),
        ]
        got = module._val[0][i].tolist()
        assert expected[1] > 0 and got == pytest.approx(expected, abs=1e-9), i


def _one_error_line(capsys) -> str:
    """The one ``corrnet train: error:`` line on stderr (warnings may precede it), no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("corrnet train: error: ")]
    assert len(lines) == 1 and "Traceback" not in err and err.rstrip().endswith(lines[0])
    return lines[0]


@pytest.mark.parametrize("where", ["argument", "config file"])
def test_unknown_network_key_is_one_line_error(tmp_path, capsys, where):
    if where == "argument":
        extra = ["--model.net.bogus", "1"]
    else:
        (tmp_path / "bad.yaml").write_text("model:\n  net:\n    bogus: 1\n")
        extra = ["--config", str(tmp_path / "bad.yaml")]
    assert main(_args(tmp_path, 1) + extra) == 2
    assert "bogus" in _one_error_line(capsys)
    assert main(_args(tmp_path, 1) + ["--model.net.width", "0"]) == 2
    assert "model.net.width" in _one_error_line(capsys)


def test_print_config_shows_the_network_defaults(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--config", str(ROOT / "configs/synthetic.yaml"), "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    net = printed[printed.index("  net:") : printed.index("  loss:")]
    for field in ("side_info: false", "width: 128", "attention_keys: 1024", "prune_ratio: 0.5"):
        assert f"    {field}" in net


def test_data_side_info_follows_the_network(tmp_path, capsys):
    cli = CorrNetCLI(
        CorrNetModule,
        CorrNetDataModule,
        run=False,
        args=_args(tmp_path, 1) + ["--model.net.side_info", "true"],
    )
    assert cli.model.net.in_channels == 6 and cli.datamodule.hparams.side_info is True
    batch = next(iter(cli.datamodule.train_dataloader()))
    assert batch["features"].shape[-1] == 6
    assert main(_args(tmp_path, 1) + ["--data.side_info", "true"]) == 2  # set in one place only
    assert "model.net.side_info" in _one_error_line(capsys)
    # a list of named channels: the synthetic data has their keys, the batch follows the list
    names = ["ratio", "orientation", "log_scale_ratio"]
    cli = CorrNetCLI(
        CorrNetModule,
        CorrNetDataModule,
        run=False,
        args=_args(tmp_path, 1)
        + ["--model.net.side_info", "[ratio, orientation, log_scale_ratio]"],
    )
    assert cli.model.net.config.channels == tuple(names) and cli.model.net.in_channels == 8
    assert tuple(cli.datamodule.hparams.side_info) == tuple(names)
    batch = next(iter(cli.datamodule.train_dataloader()))
    assert torch.equal(batch["features"], network_input(batch["xs"], batch, names))
    assert cli.model.net(batch["features"])["logits"].shape == batch["xs"].shape[:2]
    assert main(_args(tmp_path, 1) + ["--model.net.side_info", "[ratio, scale]"]) == 2
    assert "model.net.side_info: unknown channel(s) ['scale']" in _one_error_line(capsys)


def test_old_checkpoint_formats_load_or_name_their_version(trained, tmp_path):
    x = torch.randn(1, 64, 4, generator=torch.Generator().manual_seed(1)) * 0.3
    with torch.no_grad():
        expected = load_model(trained / "ckpt/last.ckpt")(x)["logits"]
    ckpt = torch.load(trained / "ckpt/last.ckpt", map_location="cpu", weights_only=True)
    net = dict(ckpt["hyper_parameters"]["net"])
    assert net.pop("side_info") is False
    ckpt["hyper_parameters"]["net"] = {"in_channels": 4, **net}  # corrnet 0.1 hparams
    torch.save(ckpt, tmp_path / "old.ckpt")
    exported = torch.load(
        export_model(trained / "ckpt/last.ckpt", tmp_path / "new.pt"), weights_only=True
    )
    assert exported["format_version"] == FORMAT_VERSION and "side_info" in exported["net"]
    old_pt = {**exported, "format": "corrnet-weights-v1", "net": {"in_channels": 4, **net}}
    del old_pt["format_version"]
    torch.save(old_pt, tmp_path / "old.pt")
    with torch.no_grad():
        for path in ("old.ckpt", "old.pt"):
            assert torch.allclose(load_model(tmp_path / path)(x)["logits"], expected, atol=1e-6)
        module = CorrNetModule.load_from_checkpoint(tmp_path / "old.ckpt", weights_only=True)
        assert torch.allclose(module.net.eval()(x)["logits"], expected, atol=1e-6)
    torch.save({**exported, "format_version": 3}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="format_version 3"):
        load_model(tmp_path / "future.pt")
    torch.save({**old_pt, "net": {"in_channels": 5, **net}}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="format_version 1 .*in_channels=5"):
        load_model(tmp_path / "odd.pt")
    torch.save({**exported, "net": {**exported["net"], "depth": 3}}, tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match="unknown.pt.*depth"):
        load_model(tmp_path / "unknown.pt")


def test_shipped_weights_formats():
    """The default weights are format version 2; the synthetic-only ones (the fine-tuning start)
    are version 1 and still load."""
    raw = torch.load(PRETRAINED, map_location="cpu", weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION and raw["net"]["side_info"] is True
    old = PRETRAINED.with_name("corrnet-synthetic.pt")
    raw = torch.load(old, map_location="cpu", weights_only=True)
    assert raw["format"] == "corrnet-weights-v1" and raw["net"]["in_channels"] == 6
    assert load_model(old).config == load_model().config


def test_mixture_draws_each_source_at_its_rate():
    from corrnet.training.sampling import Mixture

    real = [{"xs": torch.zeros(3), "image1": "a.jpg"}] * 5
    fake = [{"xs": torch.ones(3)}] * 50
    mix = Mixture([real, fake], [0.3, 0.7], seed=4)
    assert len(mix) == 55
    picks = [mix.source(i) for i in range(4000)]
    share = sum(k == 0 for k, _ in picks) / 4000
    assert abs(share - 0.3) < 4 * (0.3 * 0.7 / 4000) ** 0.5  # 4 sigma
    assert {i for k, i in picks if k == 0} == set(range(5))  # every real pair used
    assert picks == [Mixture([real, fake], [3, 7], seed=4).source(i) for i in range(4000)]
    assert set(mix[next(i for i, (k, _) in enumerate(picks) if k == 0)]) == {"xs"}
    with pytest.raises(ValueError, match="train_weights"):
        Mixture([real, fake], [1.0])
    with pytest.raises(ValueError, match="train_weights"):
        Mixture([real, fake], [0.0, -1.0])


def test_training_on_a_mix_of_files(tmp_path):
    from corrnet.datasets import write_synthetic

    write_synthetic(tmp_path / "extra.hdf5", pairs=6, seed=3, num_matches=150)
    args = _args(tmp_path, 2) + [
        "--data.train",
        f"[synthetic, {tmp_path / 'extra.hdf5'}]",
        "--data.train_weights",
        "[0.5, 0.5]",
    ]
    assert main(args) == 0
    assert (
        main(_args(tmp_path, 1) + ["--data.train", "[synthetic]", "--data.train_weights", "[1, 2]"])
        == 2
    )


def test_init_weights_loads_a_file_and_reopens_the_graph_heads(trained, tmp_path):
    from corrnet.models.corrnet import GRAPH_GATE_BIAS

    path = export_model(trained / "ckpt/last.ckpt", tmp_path / "w.pt")
    source = load_model(path).state_dict()
    config = load_model(path).config
    kept = CorrNetModule(
        net=config, init_weights=str(path), reset_graph_heads=False
    ).net.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in source.items())
    fresh = CorrNetModule(net=config, init_weights=str(path)).net.state_dict()
    heads = [k for k in source if ".graph_head." in k]
    assert heads and all(torch.equal(fresh[k], v) for k, v in source.items() if k not in heads)
    assert all(torch.all(fresh[k] == GRAPH_GATE_BIAS) for k in heads if k.endswith("bias"))
    with pytest.raises(ValueError, match="another architecture"):
        CorrNetModule(net=CorrNetConfig(width=16, heads=2), init_weights=str(path))


@pytest.mark.parametrize(
    "channels",
    [("ratio", "mutual", "log_scale_ratio", "orientation"), ("orientation", "ratio"), ()],
)
def test_init_weights_with_other_channels_computes_what_the_shared_channels_gave(channels):
    """New channels start at zero weight and dropped ones are removed: the adapted network's
    outputs equal the shipped network's on its input with the dropped channels set to zero."""
    shipped = load_model(PRETRAINED)
    target = dataclasses.replace(shipped.config, side_info=list(channels))
    adapted = CorrNetModule(net=target, init_weights=str(PRETRAINED), reset_graph_heads=False)
    adapted.net.eval()
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(2, 300, 4, generator=g) * 0.5
    per_match = {
        "ratios": torch.rand(2, 300, generator=g),
        "mutuals": (torch.rand(2, 300, generator=g) < 0.3).float(),
        "sizes": torch.rand(2, 300, 2, generator=g) * 20 + 2,
        "angles": torch.rand(2, 300, 2, generator=g) * 360,
    }
    reference = network_input(xs, per_match, True)
    for i, name in enumerate(("ratio", "mutual")):
        if name not in channels:
            reference[..., 4 + i] = 0.0
    with torch.no_grad():
        want = shipped(reference)["logits"]
        got = adapted.net(network_input(xs, per_match, list(channels)))["logits"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="another architecture"):
        CorrNetModule(
            net=dataclasses.replace(target, width=32, heads=2), init_weights=str(PRETRAINED)
        )


def test_validation_metrics_equal_the_report():
    """Validation scores pairs exactly as eval.py's ``corrnet`` method (one prediction path)."""
    import lightning as L
    from torch.utils.data import DataLoader

    from corrnet.datasets import PairCollator, SyntheticPairs
    from corrnet.eval import evaluate
    from corrnet.eval.report import summarize
    from corrnet.models import make_predictor

    model = load_model(PRETRAINED)
    module = CorrNetModule(net=model.config, init_weights=str(PRETRAINED), reset_graph_heads=False)
    pairs = SyntheticPairs(
        length=12, seed=5, mode="mixed", num_matches=600, side_info=model.config.side_info
    )
    trainer = L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    # one pair per batch, as CorrNetDataModule's validation loader gives them
    val = trainer.validate(
        module, DataLoader(pairs, batch_size=1, collate_fn=PairCollator(mode="pad")), verbose=False
    )[0]
    report = summarize(
        evaluate(pairs, make_predictor(module.net), ["corrnet"], workers=1, progress=False)
    )["methods"]["corrnet"]
    assert 0 < report["mAP20"] and any(0 < report[k] < 1 for k in ("mAP5", "mAP10", "mAP20"))
    for key in ("mAP5", "mAP10", "mAP20", "auc20", "precision", "recall"):  # logged in float32
        assert val[f"val/{key}"] == pytest.approx(report[key], abs=1e-6), key
