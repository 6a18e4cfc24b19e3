"""The tasks medxfer trains, one module each, behind one :class:`~medxfer.tasks.base.Task`
interface.

``get_task(name)`` gives the task object; :func:`task_of` the one of a run config. A
task's module is imported when it is first asked for, so that reading a task's label kind
(which the data code does) does not import the evaluation and prediction code of every task.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from medxfer.errors import ConfigError
from medxfer.tasks.base import LabelKind, PredictionOutput, Task

#: Every task, and the class that implements it (``module:Class``).
TASKS = {
    "classification": "medxfer.tasks.classification:ClassificationTask",
    "regression": "medxfer.tasks.regression:RegressionTask",
    "segmentation": "medxfer.tasks.segmentation.task:SegmentationTask",
}

_INSTANCES: dict[str, Task] = {}

__all__ = ["TASKS", "LabelKind", "PredictionOutput", "Task", "get_task", "label_kind", "task_of"]


def get_task(name: str) -> Task:
    """The task called ``name``.

    Raises:
        ConfigError: for an unknown name, with the closest match and every task.
    """
    if name not in _INSTANCES:
        if name not in TASKS:
            close = difflib.get_close_matches(str(name), TASKS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"task: {name!r} is not a task; {hint}choose one of "
                              f"{', '.join(TASKS)}")
        module_name, _, class_name = TASKS[name].partition(":")
        _INSTANCES[name] = getattr(importlib.import_module(module_name), class_name)()
    return _INSTANCES[name]


def label_kind(task: str | None) -> LabelKind | None:
    """What a label of ``task`` is (``class``, ``value`` or ``mask``); ``None`` when the
    data are unlabelled (``task`` is ``unlabelled`` or ``None``) or the task is unknown.

    The data code reads labels by their kind, so it asks this rather than a task's name.
    """
    return get_task(task).label_kind if task in TASKS else None


def task_of(config: Any) -> Task:
    """The task of a run config (or of anything with a ``task`` name)."""
    return get_task(config.task)
