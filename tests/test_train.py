"""train.py end to end on the CPU: a few steps, checkpoints, exact resume, clear errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from corrnet.checkpoint import export_model, load_model
from corrnet.datasets import collate_pairs, generate_pair
from corrnet.training.cli import main
from corrnet.training.module import CorrNetModule

ROOT = Path(__file__).resolve().parents[1]


def _args(run: Path, max_steps: int) -> list[str]:
    return ["--config", str(ROOT / "configs/demo.yaml"),
            "--trainer.max_steps", str(max_steps), "--trainer.val_check_interval", "2",
            "--trainer.limit_val_batches", "3", "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(run), "--checkpoint.dirpath", str(run / "ckpt"),
            "--trainer.logger.init_args.save_dir", str(run),
            "--data.num_workers", "0", "--data.batch_size", "2", "--data.num_matches", "128",
            "--data.synthetic_val_pairs", "3"]


def _logged_steps(run: Path) -> list[int]:
    steps = []
    for f in sorted(run.glob("lightning_logs/version_*/metrics.csv")):
        with open(f) as fh:
            steps.append(sorted({int(r["step"]) for r in csv.DictReader(fh) if r.get("train/loss")}))
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
    assert main(_args(trained, 6) + ["--ckpt_path", "last"]) == 0
    resumed = torch.load(trained / "ckpt/last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 6
    first, second = _logged_steps(trained)
    assert max(first) < 4 and min(second) >= 4      # the second run did only steps 4 and 5
    # Same data, same order, same subsamples: 4 + 2 steps equal 6 steps in one go.
    assert main(_args(tmp_path, 6)) == 0
    straight = torch.load(tmp_path / "ckpt/last.ckpt", map_location="cpu", weights_only=True)
    for name, value in straight["state_dict"].items():
        assert torch.allclose(resumed["state_dict"][name], value, atol=1e-6), name


def test_load_and_export_give_the_same_network(trained, tmp_path):
    model = load_model(trained / "ckpt/last.ckpt")
    exported = load_model(export_model(trained / "ckpt/last.ckpt", tmp_path / "w.pt", {"cmd": "test"}))
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


def test_shipped_weights_load_without_executing_code():
    model = load_model()            # corrnet/pretrained/corrnet-synthetic.pt, weights_only=True
    x = torch.randn(1, 100, model.in_channels, generator=torch.Generator().manual_seed(0)) * 0.3
    with torch.no_grad():
        out = model(x)
    assert out["logits"].shape == (1, 100) and torch.isfinite(out["logits"]).all()


def test_validation_ignores_padded_copies():
    module = CorrNetModule(net={"width": 16, "heads": 2, "num_states": 4, "blocks_per_stage": 2}).eval()
    batch = [generate_pair(5, i, "outdoor", n) for i, n in enumerate((300, 120))]
    padded = collate_pairs(batch, mode="pad", generator=torch.Generator().manual_seed(0))
    # Make every copy look like a confident inlier: counted, it would inflate all three numbers.
    padded["labels"][~padded["mask"]] = 1.0
    with torch.no_grad():
        module.validation_step(padded, 0)
    _, tp, kept, pos = module._val[0].unbind(-1)
    assert pos.tolist() == [float(s["labels"].sum()) for s in batch]
    assert (kept <= torch.tensor([300.0, 120.0])).all() and (tp <= pos).all()
