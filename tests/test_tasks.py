"""The task registry: lookup, file recognition, the interface every task fills, and that
nothing outside the task definitions and the config switches on a task's name."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import pytest

from corrnet.datasets import write_synthetic
from corrnet.datasets.pairs3d import LAYOUT
from corrnet.errors import UserError
from corrnet.models import CorrNetConfig
from corrnet.tasks import TASKS, Rigid, Task, TwoView, default_task, get_task, task_of_file

ROOT = Path(__file__).resolve().parents[1]


def test_get_task_by_name_and_one_line_for_an_unknown_one():
    assert isinstance(get_task("two_view"), TwoView) and isinstance(get_task("rigid"), Rigid)
    assert default_task() is get_task(CorrNetConfig().geometry) is CorrNetConfig().task
    with pytest.raises(UserError) as error:
        get_task("affine", "data.geometry")
    assert str(error.value) == "data.geometry: expected one of ['rigid', 'two_view'], got 'affine'"


def test_every_task_fills_the_interface():
    members = [n for n, v in vars(Task).items() if callable(v) and not n.startswith("_")]
    for name, task in TASKS.items():
        assert task.name == name and task.coords >= 1
        assert set(task.network_methods) <= set(task.methods)
        assert task.default_weights().is_file(), task.default_weights()
        overridden = {n for n in members if getattr(type(task), n) is not getattr(Task, n)}
        assert {"normalise", "estimate", "geometric_loss", "open_file", "evaluate"} <= overridden


def test_a_file_is_recognised_by_its_layout(tmp_path):
    two_view = tmp_path / "two-view.hdf5"
    write_synthetic(two_view, 1, 0, "outdoor", 32)
    three_d = tmp_path / "3d.hdf5"
    with h5py.File(three_d, "w") as f:
        f.attrs["corrnet_layout"] = LAYOUT
    assert isinstance(task_of_file(two_view), TwoView)
    assert isinstance(task_of_file(three_d), Rigid)


def test_only_the_task_definitions_and_the_config_name_a_task():
    pattern = re.compile("|".join(f'"{name}"' for name in TASKS))
    found = sorted(
        f"{path.relative_to(ROOT).as_posix()}: {line.strip()}"
        for path in [*(ROOT / "corrnet").rglob("*.py"), ROOT / "eval.py", ROOT / "train.py"]
        for line in path.read_text(encoding="utf-8").splitlines()
        if pattern.search(line)
    )
    assert found == [
        'corrnet/models/corrnet.py: geometry: str = "two_view"',
        'corrnet/tasks/rigid.py: name = "rigid"',
        'corrnet/tasks/two_view.py: name = "two_view"',
    ]
