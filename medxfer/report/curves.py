"""Training curves as small multiples: one panel per quantity, so no line hides another.

A run's history holds several series that are often equal or nearly so: the accuracy and
the balanced accuracy of balanced data, the training loss and its task term ``L_new``
when no other term is added. Drawn on one axis, one covers the other. Here every
validation metric gets its own panel; the losses share one (training against validation,
the overfitting check); the loss terms get another, drawn only when they say something
the training loss does not; the learning rate has its own. Every panel marks the epoch
whose weights the run kept.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medxfer.errors import ConfigError
from medxfer.metric_table import bounds, metric, short_label
from medxfer.report.figures import DPI, _epoch_axis, _number, _save, _series

#: Line styles of the series that share a panel: each differs in dash and marker.
PANEL_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (1, 3)), "v"))
SELECTED_COLOUR = "0.25"
#: Panels per row at most.
COLUMNS = 4
#: The smallest range the axis of a metric in [0, 1] shows.
MIN_SPAN = 0.1


def training_curves_figure(history: Sequence[Mapping[str, Any]], *,
                           selected_epoch: Any = None, monitor: Any = None,
                           select: str = "best") -> Figure:
    """The figure of :func:`plot_training_curves` (for tests and other writers)."""
    rows = list(history)
    epochs = _epoch_axis(rows)
    keys: list[str] = []
    for row in rows:
        keys += [k for k, v in row.items() if k not in keys and _number(v) is not None]
    losses = [k for k in ("train_loss", "val_loss") if k in keys]
    terms = [k for k in keys if "_L_" in k or k.startswith("L_")
             or (k.startswith("train_") and k not in losses and k != "train_loss")]
    metrics = [k for k in keys if k.startswith("val_") and k != "val_loss"]
    shown_terms = _terms_worth_a_panel(rows, terms)
    panels: list[tuple[str, list[str]]] = []
    if losses:
        panels.append(("Loss", losses))
    if shown_terms:
        panels.append(("Loss terms (training)", shown_terms))
    panels += [(_metric_title(k, rows, metrics[:i]), [k]) for i, k in enumerate(metrics)]
    if "lr" in keys and len({_number(r.get("lr")) for r in rows}) > 1:
        panels.append(("Learning rate", ["lr"]))
    if not panels:
        panels = [("no training history", [])]

    monitor_key = _monitor_key(monitor)
    selected = _number(selected_epoch)
    lines = math.ceil(len(panels) / COLUMNS)
    columns = math.ceil(len(panels) / lines)  # 9 panels as 3 x 3, not 4 + 4 + 1
    fig = Figure(figsize=(3.3 * columns + 0.4, 2.7 * lines + 0.9), dpi=DPI,
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(lines, columns, squeeze=False)).ravel()
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    for index, (ax, (title, series)) in enumerate(zip(axes, panels)):
        _draw_panel(ax, rows, epochs, series, title, selected, monitor_key)
        if index + columns >= len(panels):  # the lowest panel of its column
            ax.set_xlabel("epoch", fontsize=9)
    if not rows:
        axes[0].text(0.5, 0.5, "no training history", ha="center", va="center",
                     transform=axes[0].transAxes)
    fig.suptitle(_suptitle(selected, monitor_key, select, len(rows), terms, shown_terms),
                 fontsize=10)
    return fig


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                         *, selected_epoch: Any = None, monitor: Any = None,
                         select: str = "best") -> Path:
    """Training curves, one panel per quantity, with the kept epoch marked.

    Panels: the training and validation loss; the loss terms (``train_L_new``,
    ``train_L_pre``, each plugin's term) when there is more than the task loss, or it
    differs from the training loss (``loss.beta``); each ``val_*`` metric; the learning
    rate when it changes. A vertical line marks ``selected_epoch`` in every panel and a star
    its value on the monitored metric. Missing or NaN values leave gaps.

    Args:
        history: One dict per epoch (``epoch`` counted from 1, ``train_loss``,
            ``val_loss``, ``val_auc``, ``lr``, ...); the position when ``epoch`` is missing.
        path: The PNG to write.
        selected_epoch: The epoch whose weights the run kept (``best_epoch`` of
            ``metrics.json``), or None.
        monitor: The selection metric (``val_auc`` or ``[name, direction]``).
        select: ``best`` or ``last`` (``train.early_stopping.select``), for the title.
    """
    return _save(training_curves_figure(history, selected_epoch=selected_epoch,
                                        monitor=monitor, select=select), path)


def _draw_panel(ax: Any, rows: list[Mapping[str, Any]], epochs: list[float],
                series: list[str], title: str, selected: float | None,
                monitor_key: str | None) -> None:
    drawn: list[tuple[str, list[float]]] = []
    for index, key in enumerate(series):
        values = _series(rows, key)
        label = _series_label(key)
        twin = next((name for name, other in drawn if _same(values, other)), None)
        if twin is not None:
            label += f" (= {twin})"
        dash, marker = PANEL_STYLES[index % len(PANEL_STYLES)]
        ax.plot(epochs, values, linestyle=dash, marker=marker, markersize=4,
                linewidth=2.2 if index == 0 else 1.4, label=label,
                markerfacecolor="none" if index else None, zorder=2 + index)
        drawn.append((_series_label(key), values))
    if selected is not None and rows:
        ax.axvline(selected, color=SELECTED_COLOUR, linestyle=(0, (4, 2)), linewidth=1,
                   zorder=1)
        if monitor_key in series and selected in epochs:
            value = _series(rows, monitor_key)[epochs.index(selected)]
            if not math.isnan(value):
                ax.plot([selected], [value], "*", color="crimson", markersize=12, zorder=9)
    if series == ["lr"]:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    elif len(series) == 1:
        _keep_small_changes_small(ax, series[0])
    if monitor_key in series and len(series) == 1:
        title = title.removesuffix(")") + "; selection metric)"
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="best", framealpha=0.8)


def _keep_small_changes_small(ax: Any, key: str) -> None:
    """A metric in [0, 1] spans at least :data:`MIN_SPAN` of its axis, so that noise in
    the third decimal does not look like a collapse."""
    name = key.removeprefix("val_")
    try:
        bounded = bounds(metric(name).name) is not None
    except ConfigError:
        bounded = False
    low, high = ax.get_ylim()
    if not bounded or high - low >= MIN_SPAN:
        return
    middle = (low + high) / 2
    low = min(max(0.0, middle - MIN_SPAN / 2), 1.0 - MIN_SPAN)
    ax.set_ylim(low - 0.005, low + MIN_SPAN + 0.005)


def _terms_worth_a_panel(rows: list[Mapping[str, Any]], terms: list[str]) -> list[str]:
    """The loss terms, unless the only one is ``L_new`` and it equals the training loss
    (nothing else was added and ``loss.beta`` is 1): then the panel would repeat it."""
    if terms == ["train_L_new"] and _same(_series(rows, "train_L_new"),
                                           _series(rows, "train_loss")):
        return []
    return terms


def _suptitle(selected: float | None, monitor_key: str | None, select: str, n: int,
              terms: list[str], shown_terms: list[str]) -> str:
    parts = [f"Training curves ({n} epoch{'s' if n != 1 else ''})"]
    if selected is not None:
        how = "the last" if select == "last" else \
            f"best {_series_label(monitor_key)}" if monitor_key else "selected"
        parts.append(f"dashed line: epoch {int(selected)}, kept ({how})")
    if terms and not shown_terms:
        parts.append("training loss = L_new (no other loss term)")
    return "; ".join(parts)


def _monitor_key(monitor: Any) -> str | None:
    """``val_auc`` from ``"val_auc"``, ``"auc"`` or ``["auc", "max"]``."""
    if isinstance(monitor, (list, tuple)):
        monitor = monitor[0] if monitor else None
    if not isinstance(monitor, str) or not monitor:
        return None
    return monitor if monitor.startswith("val_") else f"val_{monitor}"


def _metric_title(key: str, rows: list[Mapping[str, Any]], before: list[str]) -> str:
    """``Balanced accuracy (validation)``, with ``= accuracy`` when it equals an earlier
    panel's metric at every epoch (balanced data), which the reader would otherwise check."""
    values = _series(rows, key)
    twin = next((other for other in before if _same(values, _series(rows, other))), None)
    same = f" = {_series_label(twin).lower()}" if twin else ""
    return f"{_series_label(key)} (validation{same})"


def _series_label(key: str | None) -> str:
    """``val_balanced_accuracy`` as "balanced accuracy", ``train_L_new`` as "L_new (task)"."""
    if key is None:
        return ""
    named = {"train_loss": "training", "val_loss": "validation",
             "train_L_new": "L_new (task)", "train_L_pre": "L_pre (retention)",
             "lr": "learning rate"}
    if key in named:
        return named[key]
    name = key.removeprefix("val_").removeprefix("train_")
    try:
        return short_label(metric(name).name) if key.startswith("val_") else name
    except ConfigError:  # a metric outside the table keeps its own name
        return name.replace("_", " ")


def _same(a: list[float], b: list[float]) -> bool:
    """Equal series (to display precision), with gaps in the same places."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or not np.array_equal(np.isnan(x), np.isnan(y)):
        return False
    finite = ~np.isnan(x)
    return bool(finite.any()) and bool(np.allclose(x[finite], y[finite], rtol=1e-4, atol=1e-6))
