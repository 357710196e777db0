"""CorrNet's problems, one :class:`Task` each, by the name ``model.net.geometry`` stores.

A new task is one module with a :class:`Task` subclass and one entry in :data:`TASKS`.
Importing this package imports no torch (the tasks import what they need when used).
"""

from __future__ import annotations

from pathlib import Path

from corrnet.errors import UserError

from .base import Task
from .rigid import Rigid
from .two_view import TwoView

TASKS: dict[str, Task] = {task.name: task for task in (TwoView(), Rigid())}
"""Every task by its name."""


def get_task(name: str, source: str = "model.net.geometry") -> Task:
    """The task called ``name``; UserError naming ``source`` and the known names otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise UserError(f"{source}: expected one of {sorted(TASKS)}, got {name!r}") from None


def default_task() -> Task:
    """The task of a configuration that names none (:class:`~corrnet.models.CorrNetConfig`'s
    default)."""
    from corrnet.models.corrnet import CorrNetConfig

    return get_task(CorrNetConfig.geometry)


def task_of_file(path: Path) -> Task:
    """The task whose pairs the HDF5 file ``path`` holds (:meth:`Task.recognises`)."""
    return next(task for task in TASKS.values() if task.recognises(path))


__all__ = ["TASKS", "Rigid", "Task", "TwoView", "default_task", "get_task", "task_of_file"]
