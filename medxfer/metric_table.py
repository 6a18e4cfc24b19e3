"""The metric table: one entry per metric medxfer computes, read by every report.

:data:`METRICS` says, once per metric, what reports print for it, which tasks compute it,
whether higher or lower is better, whether it lies in [0, 1], where it sorts in a run's
metric table, and whether the per-epoch validation computes it or it is also given per
class. :data:`COLUMNS` names the tables and figures that show a fixed set of metrics, in
their column order; each shows those of its run's task. Metrics, reports, ``compare``, the
CLI and TensorBoard ask the functions below instead of keeping lists of their own.

Names outside the table (per-class keys such as ``dice_liver``, a metric some other tool
wrote into a summary) are tolerated by the display queries: they print as their key, sort
after the table's metrics in the order they come, are not clipped to [0, 1], and count as
maximised unless they end in ``loss``. Only :func:`metric` refuses them.

The table is in the order the metric functions compute the metrics (the order of
``metrics.json``): :func:`metrics_for` answers in that order unless asked for a view.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from medxfer.errors import ConfigError

TASKS = ("classification", "regression", "segmentation")

_CLS = frozenset({"classification"})
_REG = frozenset({"regression"})
_SEG = frozenset({"segmentation"})
_ALL = frozenset(TASKS)


@dataclass(frozen=True)
class Metric:
    """One metric.

    Attributes:
        name: Its key in ``metrics.json``, ``metrics.csv`` and the history (``val_<name>``).
        label: What reports print for it; :func:`short_label` drops the part in brackets.
        tasks: The tasks whose evaluation computes it.
        direction: ``"max"`` when higher is better, ``"min"`` when lower is.
        bounded: It lies in [0, 1], so confidence intervals are clipped there.
        order: Its row in a run report's metric table, ``metrics.csv`` and the
            source/target table (0 first); None: after the ranked metrics, in the order the
            summary lists them.
        unit: ``"mm"`` for a distance (in voxels when the voxel spacing is unknown).
        validation: The per-epoch validation computes it (``val_<name>`` in the history),
            so ``train.early_stopping.metric`` may name it.
        per_class: Also given per foreground class (``<name>_<class>``); the plain name is
            the mean over the foreground classes.
        default_monitor: What ``train.early_stopping.metric: auto`` monitors for its task.
        alias_of: Another name of that metric that summaries written elsewhere may use;
            medxfer never computes it.
    """

    name: str
    label: str
    tasks: frozenset[str]
    direction: Literal["max", "min"]
    bounded: bool = False
    order: int | None = None
    unit: str | None = None
    validation: bool = False
    per_class: bool = False
    default_monitor: bool = False
    alias_of: str | None = None


METRICS: tuple[Metric, ...] = (
    # The model's loss on the split: computed by the evaluation, not from predictions.
    Metric("loss", "Loss", _ALL, "min", order=15, validation=True),
    # classification_metrics, in its order
    Metric("accuracy", "Accuracy", _CLS, "max", bounded=True, order=1, validation=True),
    Metric("balanced_accuracy", "Balanced accuracy", _CLS, "max", bounded=True, order=2,
           validation=True),
    Metric("precision", "Precision (PPV)", _CLS, "max", bounded=True, order=6, validation=True),
    Metric("recall", "Recall (sensitivity)", _CLS, "max", bounded=True, order=4,
           validation=True),
    Metric("sensitivity", "Sensitivity", _CLS, "max", bounded=True, order=3,
           alias_of="recall"),
    Metric("specificity", "Specificity", _CLS, "max", bounded=True, order=5, validation=True),
    Metric("f1", "F1", _CLS, "max", bounded=True, order=7, validation=True),
    Metric("auc", "AUC (ROC)", _CLS, "max", bounded=True, order=0, validation=True,
           default_monitor=True),
    # expected_calibration_error
    Metric("ece", "ECE", _CLS, "min", bounded=True),
    # regression_metrics
    Metric("mae", "MAE", _REG, "min", order=11, validation=True, default_monitor=True),
    Metric("mse", "MSE", _REG, "min", order=12, validation=True),
    Metric("rmse", "RMSE", _REG, "min", order=13, validation=True),
    Metric("r2", "R²", _REG, "max", order=14, validation=True),
    # segmentation_summary (the validation computes the mean foreground Dice only)
    Metric("dice", "Dice", _SEG, "max", bounded=True, order=8, validation=True, per_class=True,
           default_monitor=True),
    Metric("iou", "IoU", _SEG, "max", bounded=True, order=9, per_class=True),
    Metric("hd95", "HD95", _SEG, "min", order=10, unit="mm", per_class=True),
    Metric("fraction_mae", "Foreground fraction MAE", _SEG, "min", bounded=True),
    Metric("fraction_mse", "Foreground fraction MSE", _SEG, "min", bounded=True),
    # A count, never compared: its direction is not used.
    Metric("n", "Cases (n)", _ALL, "max", order=16),
)

#: Tables and figures that show a fixed set of metrics, in column (or row) order; each
#: shows the ones of its run's task that the run has.
COLUMNS: Mapping[str, tuple[str, ...]] = {
    # comparison.md's main table and compare's console table; the first of a task is the
    # metric of primary_bars.png and heatmap.png
    "comparison": ("accuracy", "precision", "recall", "specificity", "f1", "auc",
                   "balanced_accuracy", "dice", "iou", "hd95", "fraction_mae", "fraction_mse",
                   "mae", "mse", "rmse", "r2"),
    # compare's metrics_grouped.png (segmentation's also dice_iou_bars.png)
    "comparison_bars": ("accuracy", "precision", "recall", "specificity", "f1", "auc", "dice",
                        "iou", "mae", "mse", "rmse"),
    # ensemble.md and medxfer ensemble's console table
    "ensemble": ("accuracy", "balanced_accuracy", "auc", "f1", "ece", "dice", "iou", "hd95"),
    "ensemble_console": ("accuracy", "auc", "f1", "ece", "dice", "iou", "hd95"),
    # a deep ensemble's members beside the ensemble, in its run report
    "members": ("accuracy", "balanced_accuracy", "auc", "f1", "sensitivity", "recall",
                "specificity", "ece", "mae", "mse", "rmse", "r2"),
    # the run report's source/target table: rows sorted like the metric table (by order)
    "domain": ("auc", "accuracy", "balanced_accuracy", "sensitivity", "recall", "specificity",
               "precision", "f1", "dice", "iou", "hd95", "mae", "mse", "rmse", "r2", "loss",
               "n", "ece"),
}

_BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}


def metric(name: str) -> Metric:
    """The table's entry for ``name``.

    Raises:
        ConfigError: for a name outside the table, with the closest names.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_BY_NAME), n=2)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"metric {name!r} is not one medxfer computes.{hint} Choose one "
                          f"of: {', '.join(_BY_NAME)}") from None


def metrics_for(task: str | None, *, validation: bool = False, per_class: bool = False,
                shown_in: str | None = None) -> tuple[str, ...]:
    """Names of the metrics ``task`` computes, in the table's order.

    Args:
        task: ``classification``, ``regression`` or ``segmentation``; None for every task.
        validation: Only those the per-epoch validation computes.
        per_class: Only those also given per foreground class.
        shown_in: Only those a fixed table or figure shows (a key of :data:`COLUMNS`), in
            its column order; an alias it lists is included. Aliases are left out otherwise.

    Returns:
        The names, e.g. ``metrics_for("segmentation", per_class=True)`` is
        ``("dice", "iou", "hd95")``.

    Raises:
        ConfigError: for an unknown task.
        ValueError: for an unknown ``shown_in``.
    """
    if task is not None and task not in TASKS:
        raise ConfigError(f"task: unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if shown_in is None:
        entries = [m for m in METRICS if m.alias_of is None]
    elif shown_in in COLUMNS:
        entries = [_BY_NAME[name] for name in COLUMNS[shown_in]]
    else:
        raise ValueError(f"shown_in={shown_in!r}: not one of {', '.join(COLUMNS)}")
    return tuple(m.name for m in entries
                 if (task is None or task in m.tasks) and (m.validation or not validation)
                 and (m.per_class or not per_class))


def default_monitor(task: str) -> str:
    """The validation metric ``train.early_stopping.metric: auto`` monitors for ``task``.

    Raises:
        ConfigError: for an unknown task.
    """
    metrics_for(task)  # refuses an unknown task
    return next(m.name for m in METRICS if m.default_monitor and task in m.tasks)


def label(name: str) -> str:
    """What reports print for ``name`` (``"AUC (ROC)"``); a name outside the table as it is."""
    entry = _BY_NAME.get(name)
    return entry.label if entry else name


def short_label(name: str) -> str:
    """:func:`label` without its part in brackets (``"AUC"``), for column headers."""
    return label(name).split(" (")[0]


def lower_is_better(name: str) -> bool:
    """Whether smaller values of ``name`` are better: the table's direction; for a name
    outside it, whether it ends in ``loss`` (``dice_loss``)."""
    entry = _BY_NAME.get(name)
    return entry.direction == "min" if entry else name.endswith("loss")


def bounds(name: str) -> tuple[float, float] | None:
    """``(0.0, 1.0)`` for a metric that lies in [0, 1]; None otherwise (and outside the
    table)."""
    entry = _BY_NAME.get(name)
    return (0.0, 1.0) if entry and entry.bounded else None


def sort_key(name: str) -> tuple[int, int]:
    """Sorts ``name`` into a run's metric table: the ranked metrics by their ``order``, then
    everything else (a stable sort keeps those in the order they come)."""
    entry = _BY_NAME.get(name)
    if entry is None or entry.order is None:
        return (1, 0)
    return (0, entry.order)
