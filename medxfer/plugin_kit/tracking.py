"""What run-tracking loggers record, named alike by every logger.

A logger (``medxfer_register_loggers``) turns a run into scalars and parameters of its
tool. These helpers give every logger the same names: :func:`metric_tag` for an epoch's
metrics (``val/auc``, ``train/loss``), :func:`summary_metrics` for the final evaluation
(``test/auc``, ``test/dice_<class>``, ``test/recall_<class>``, ``final_val/auc``) and
:func:`hyperparameters` for the resolved config (``train.optimizer.lr``). Nothing here
imports torch.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medxfer.metric_table import metrics_for

if TYPE_CHECKING:  # pragma: no cover
    from medxfer.config import RunConfig

#: Summary sections whose numbers :func:`summary_metrics` records -> their tag prefix.
#: The kept model's validation metrics are ``final_val/``: ``val/`` holds every epoch's.
SUMMARY_SPLITS = {"val": "final_val", "test": "test", "target_test": "target_test"}
#: Config sections left out of :func:`hyperparameters`: where results are sent is not a
#: hyper-parameter (and may hold a server address).
NOT_HYPERPARAMETERS = ("tracking",)
#: Epoch metrics that are not scalars of the epoch (its number is the step).
NOT_LOGGED = frozenset({"epoch"})


def metric_tag(key: str, task: str) -> str:
    """The tag of an epoch's metric: ``val_<name>`` of a validation metric of ``task`` in
    the metric table is ``val/<name>`` (``val/balanced_accuracy``); any other key is
    grouped by its first word: ``train_loss`` as ``train/loss``, ``lr`` as ``lr``.

    Args:
        key: The metric's name in the epoch's metrics (the history in ``metrics.json``).
        task: The run's task (``ctx.config.task``).
    """
    name = key.removeprefix("val_")
    if name != key and name in metrics_for(task, validation=True):
        return f"val/{name}"
    return key.replace("_", "/", 1)


def epoch_scalars(metrics: Mapping[str, Any], task: str) -> dict[str, float]:
    """An epoch's finite numbers by :func:`metric_tag` (``epoch`` itself left out)."""
    return {metric_tag(key, task): float(value) for key, value in metrics.items()
            if key not in NOT_LOGGED and _finite(value) is not None}


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The final evaluation's numbers by tag: ``test/<metric>``, ``target_test/<metric>``
    and ``final_val/<metric>`` (the kept model on validation; ``val/`` names every epoch's
    validation) for the summary's sections, per-class values included (e.g.
    ``test/dice_<class>``), and ``test/recall_<class>`` (the sensitivity of each class)
    from the test ``confusion_matrix`` with ``class_names``. Undefined values (NaN,
    ``None``) are left out.

    Args:
        summary: A run's summary, as in ``metrics.json``.
    """
    found: dict[str, float] = {}
    for split, prefix in SUMMARY_SPLITS.items():
        section = summary.get(split)
        if not isinstance(section, Mapping):
            continue
        for key, value in section.items():
            number = _finite(value)
            if number is not None:
                found[f"{prefix}/{key}"] = number
    found.update(_per_class_recall(summary.get("confusion_matrix"), summary.get("class_names")))
    return found


def hyperparameters(config: RunConfig | Mapping[str, Any]) -> dict[str, str | float | int | bool]:
    """The resolved config's values by dotted key (``train.optimizer.lr``,
    ``model.backbone.name``, ``strategy.name``): numbers, flags and text as they are,
    lists as JSON text, ``None`` as ``"none"``. The ``tracking`` section is left out.

    Args:
        config: The run config (or its ``model_dump(mode="json")``).
    """
    raw = config if isinstance(config, Mapping) else config.model_dump(mode="json")
    flat: dict[str, str | float | int | bool] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif node is None:
            flat[prefix] = "none"
        elif isinstance(node, (bool, int, float, str)):
            flat[prefix] = node
        else:  # lists and empty mappings
            flat[prefix] = json.dumps(node)

    walk({k: v for k, v in raw.items() if k not in NOT_HYPERPARAMETERS}, "")
    return flat


def _per_class_recall(matrix: Any, class_names: Any) -> dict[str, float]:
    """``test/recall_<class>`` from a confusion matrix (true classes as rows)."""
    if not isinstance(matrix, list) or not matrix or not isinstance(class_names, list) \
            or len(class_names) != len(matrix):
        return {}
    found = {}
    for index, (name, row) in enumerate(zip(class_names, matrix)):
        total = sum(row) if isinstance(row, list) and len(row) == len(matrix) else 0
        if total:
            found[f"test/recall_{_class_key(name)}"] = float(row[index]) / total
    return found


def _class_key(name: Any) -> str:
    """A class name as metric keys spell it (as ``dice_<class>`` does)."""
    return re.sub(r"[^0-9A-Za-z_-]+", "_", str(name)).strip("_") or "class"


def _finite(value: Any) -> float | None:
    """A finite real number as ``float`` (numpy's included), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
