"""Figures as PNG: training curves (also of ensemble members), confusion matrix, ROC curves.

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
from sklearn import metrics as skm

from medxfer.io import atomic_write_bytes
from medxfer.report.tables import as_list

DPI = 120
_LOSS_STYLE = {"train_loss": ("train loss", "-"), "val_loss": ("val loss", "-"),
               "train_L_new": ("train L_new (task)", "--"),
               "train_L_pre": ("train L_pre (retention)", ":")}


def plot_training_curves(history: Sequence[Mapping[str, Any]],
                         path: str | os.PathLike[str]) -> Path:
    """Losses (left) and validation metrics (right) per epoch.

    The left panel shows every key ending in ``loss`` and every ``*_L_*`` term of the
    combined loss (``train_L_new``, ``train_L_pre``), with ``lr`` on a secondary axis when
    present; the right panel every other ``val_*`` number. Missing or NaN values leave gaps.

    Args:
        history: One dict per epoch (``epoch``, ``train_loss``, ``val_loss``, ``val_auc``,
            ``lr``, ...); ``epoch`` is the 0-based index the trainer stores (drawn 1-based,
            as the console counts), the position when missing.
        path: The PNG to write.
    """
    rows = list(history)
    epochs = _epoch_axis(rows)
    keys: list[str] = []
    for row in rows:
        keys += [k for k, v in row.items() if k not in keys and _number(v) is not None]
    loss_keys = [k for k in keys if k.endswith("loss") or "_L_" in k or k.startswith("L_")]
    metric_keys = [k for k in keys if k.startswith("val_") and k not in loss_keys]

    fig = Figure(figsize=(11, 4.8), dpi=DPI, layout="constrained")
    ax_loss, ax_metric = fig.subplots(1, 2)
    if not rows:
        for ax in (ax_loss, ax_metric):
            ax.text(0.5, 0.5, "no training history", ha="center", va="center",
                    transform=ax.transAxes)
    for key in loss_keys:
        label, style = _LOSS_STYLE.get(key, (key.replace("_", " "), "-"))
        ax_loss.plot(epochs, _series(rows, key), style, marker="o", markersize=3, label=label)
    ax_lr = None
    if "lr" in keys:
        ax_lr = ax_loss.twinx()
        ax_lr.plot(epochs, _series(rows, "lr"), color="0.6", linestyle="-.", linewidth=1,
                   label="learning rate")
        ax_lr.set_ylabel("learning rate", color="0.45")
        ax_lr.tick_params(axis="y", colors="0.45", labelsize=8)
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for key in metric_keys:
        ax_metric.plot(epochs, _series(rows, key), marker="o", markersize=3,
                       label=key.removeprefix("val_").replace("_", " "))
    ax_loss.set(title="Losses", xlabel="epoch", ylabel="loss")
    ax_metric.set(title="Validation metrics", xlabel="epoch", ylabel="value")
    for ax in (ax_loss, ax_metric):
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    # Legends go below the panels, where they never hide a curve.
    for ax, handles in ((ax_loss, ax_loss.lines + (ax_lr.lines if ax_lr else [])),
                        (ax_metric, ax_metric.lines)):
        if handles:
            ax.legend(handles, [h.get_label() for h in handles], fontsize=8, ncol=3,
                      loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    return _save(fig, path)


def plot_member_training_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]],
                                path: str | os.PathLike[str], *, metric: str = "val_loss",
                                best_epochs: Mapping[str, Any] | None = None) -> Path:
    """Training curves of a deep ensemble's members: one colour per member.

    The left panel shows each member's training (solid) and validation (dashed) loss, the
    right one the validation ``metric`` its checkpoint was selected on, with a star at the
    epoch each member kept (``best_epochs``, as its ``metrics.json`` records it).

    Args:
        histories: Member label -> one dict per epoch (as :func:`plot_training_curves`).
        path: The PNG to write.
        metric: The history key of the selection metric (``val_auc``, ``val_loss``, ...).
        best_epochs: Member label -> the epoch whose weights the member kept (0-based, as
            ``metrics.json`` stores it).
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
        best = None if best is None else best + 1  # stored 0-based, drawn 1-based
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


def plot_roc_curve(y_true: Any, probs: Any, path: str | os.PathLike[str],
                   class_names: Sequence[str] | None = None, *,
                   threshold: float | None = None) -> Path:
    """ROC curve(s) with the AUC in the legend.

    Binary (``probs`` ``[N, 2]``): one curve for the positive class (class 1), and the
    operating point of ``threshold`` when given. Multi-class: one one-vs-rest curve per
    class. A class without both positive and negative cases has no curve (noted in the
    figure), so a single-class ``y_true`` still gives a valid, annotated PNG.

    Args:
        y_true: Integer labels ``[N]``.
        probs: Probabilities ``[N, C]``.
        path: The PNG to write.
        class_names: The C class names (default ``0..C-1``).
        threshold: Binary decision threshold to mark on the curve.
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64).reshape(y.size, -1)
    num_classes = p.shape[1]
    names = [str(c) for c in (as_list(class_names) or range(num_classes))]
    fig = Figure(figsize=(5.6, 5.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="chance")
    classes = [1] if num_classes == 2 else list(range(num_classes))
    skipped = []
    for c in classes:
        positive = y == c
        if positive.all() or not positive.any():
            skipped.append(names[c])
            continue
        fpr, tpr, _ = skm.roc_curve(positive, p[:, c])
        auc = skm.roc_auc_score(positive, p[:, c])
        label = f"AUC = {auc:.3f}" if num_classes == 2 else f"{names[c]} (AUC = {auc:.3f})"
        ax.plot(fpr, tpr, linewidth=1.8, label=label)
        if num_classes == 2 and threshold is not None:
            pred = p[:, 1] >= threshold
            sens = pred[positive].mean()
            fp_rate = pred[~positive].mean()
            ax.plot([fp_rate], [sens], "o", color="crimson", markersize=7,
                    label=f"threshold {threshold:.3f}")
    if skipped:
        note = ("ROC undefined: only one class present" if num_classes == 2
                else f"no curve (class absent or alone): {', '.join(skipped)}")
        ax.text(0.5, 0.55, note, ha="center", transform=ax.transAxes, color="crimson",
                fontsize=9, wrap=True)
    positive_name = f" ({names[1]} positive)" if num_classes == 2 else " (one-vs-rest)"
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal",
           xlabel="false positive rate (1 - specificity)",
           ylabel="true positive rate (sensitivity)", title="ROC curve" + positive_name)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [math.nan if (v := _number(r.get(key))) is None else v for r in rows]


def _epoch_axis(rows: Sequence[Mapping[str, Any]]) -> list[float | None]:
    """The 1-based epoch of each history row (stored 0-based; the position when absent)."""
    axis = []
    for i, row in enumerate(rows):
        stored = _number(row.get("epoch"))
        axis.append(i + 1.0 if stored is None else stored + 1)
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
