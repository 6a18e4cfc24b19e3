"""Figures as PNG: training curves of ensemble members, the confusion matrix, and the
helpers every figure module shares (a run's own curves are in :mod:`medxfer.report.curves`,
the ROC curve in :mod:`medxfer.report.roc`).

Figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``), so no GUI
backend is ever selected and no global figure state is kept; PNGs are rendered by Agg and
written atomically. Every function returns the path it wrote.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medxfer.io import atomic_write_bytes
from medxfer.report.tables import as_list

DPI = 120


def plot_member_training_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]],
                                path: str | os.PathLike[str], *, metric: str = "val_loss",
                                best_epochs: Mapping[str, Any] | None = None) -> Path:
    """Training curves of a deep ensemble's members: one colour per member.

    The left panel shows each member's training (solid) and validation (dashed) loss, the
    right one the validation ``metric`` its checkpoint was selected on, with a star at the
    epoch each member kept (``best_epochs``, as its ``metrics.json`` records it).

    Args:
        histories: Member label -> one dict per epoch (``epoch`` counted from 1,
            ``train_loss``, ``val_loss``, the ``metric``).
        path: The PNG to write.
        metric: The history key of the selection metric (``val_auc``, ``val_loss``, ...).
        best_epochs: Member label -> the epoch whose weights the member kept (counted from
            1, as ``metrics.json`` stores it).
    """
    key = metric if metric.startswith("val_") else f"val_{metric}"
    fig = Figure(figsize=(11, 4.8), dpi=DPI, layout="constrained")
    ax_loss, ax_metric = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(histories))]
    for colour, (label, history) in zip(colours, histories.items()):
        rows = list(history)
        epochs = _epoch_axis(rows)
        ax_loss.plot(epochs, _series(rows, "train_loss"), "-", color=colour, marker="o",
                     markersize=3, label=f"{label} train")
        ax_loss.plot(epochs, _series(rows, "val_loss"), "--", color=colour, marker="o",
                     markersize=3, label=f"{label} val")
        values = _series(rows, key)
        ax_metric.plot(epochs, values, marker="o", markersize=3, color=colour, label=label)
        best = _number((best_epochs or {}).get(label))
        if best in epochs and not math.isnan(values[epochs.index(best)]):
            ax_metric.plot([best], [values[epochs.index(best)]], "*", markersize=11,
                           color=colour)
    if not histories:
        for ax in (ax_loss, ax_metric):
            ax.text(0.5, 0.5, "no training history", ha="center", va="center",
                    transform=ax.transAxes)
    ax_loss.set(title="Losses per member (solid: train, dashed: val)", xlabel="epoch",
                ylabel="loss")
    ax_metric.set(title=f"{key.removeprefix('val_').replace('_', ' ')} on validation "
                        "(star: the epoch kept)", xlabel="epoch", ylabel="value")
    for ax in (ax_loss, ax_metric):
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.lines:
            handles = [h for h in ax.lines if not h.get_label().startswith("_")]
            ax.legend(handles, [h.get_label() for h in handles], fontsize=8, ncol=4,
                      loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    return _save(fig, path)


def plot_confusion_matrix(cm: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str],
                          path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """A confusion matrix: counts in each cell, colour by the share of the true class.

    Args:
        cm: ``C x C`` counts, true classes as rows and predictions as columns.
        class_names: The C class names (or None for ``0..C-1``).
        path: The PNG to write.
        title: Figure title (default "Confusion matrix").
    """
    counts = np.asarray(cm, dtype=np.int64).reshape(len(cm), -1)
    n = counts.shape[0]
    names = [str(c) for c in (as_list(class_names) or range(n))]
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = max(3.8, 1.0 + 0.7 * n)
    fig = Figure(figsize=(size + 1.2, size), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of true class", shrink=0.8)
    font = 11 if n <= 6 else 8 if n <= 12 else 6
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{counts[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                    fontsize=font, color="white" if share[i, j] > 0.5 else "black")
    tilt = n > 4 or max((len(str(name)) for name in names), default=0) > 8
    ax.set_xticks(range(n), names, rotation=35 if tilt else 0, ha="right" if tilt else "center")
    ax.set_yticks(range(n), names)
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix")
    return _save(fig, path)


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [math.nan if (v := _number(r.get(key))) is None else v for r in rows]


def _epoch_axis(rows: Sequence[Mapping[str, Any]]) -> list[float]:
    """The epoch of each history row, counted from 1 (its position when absent)."""
    axis = []
    for i, row in enumerate(rows):
        stored = _number(row.get("epoch"))
        axis.append(i + 1.0 if stored is None else stored)
    return axis


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
