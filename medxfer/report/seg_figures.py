"""Segmentation figures as PNG: Dice per class over cases, prediction/truth overlays.

Built like :mod:`medxfer.report.figures`: :class:`matplotlib.figure.Figure` without
``pyplot``, rendered by Agg and written atomically; every function returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from medxfer.report.figures import DPI, _save

OVERLAY_ALPHA = 0.45


def class_colours(num_foreground: int) -> np.ndarray:
    """RGB colours ``[K, 3]`` of foreground classes 1..K (tab10, then tab20 beyond 10)."""
    cmap = colormaps["tab10" if num_foreground <= 10 else "tab20"]
    return np.array([cmap(i % cmap.N)[:3] for i in range(num_foreground)])


def plot_dice_boxplot(dice: Any, class_names: Sequence[str],
                      path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Box plot of the per-case Dice of each foreground class, with every case as a dot.

    Args:
        dice: Per-case Dice ``[N, K]`` (K foreground classes); NaN values are left out.
        class_names: The K foreground class names.
        path: The PNG to write.
        title: Figure title (default "Dice per class (test cases)").
    """
    values = np.asarray(dice, dtype=np.float64).reshape(-1, len(class_names))
    k = len(class_names)
    fig = Figure(figsize=(max(4.2, 1.2 + 1.1 * k), 4.4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    columns = [col[np.isfinite(col)] for col in values.T]
    colours = class_colours(k)
    if any(col.size for col in columns):
        boxes = ax.boxplot([col if col.size else [np.nan] for col in columns],
                           positions=range(1, k + 1), widths=0.5, showfliers=False,
                           patch_artist=True, medianprops={"color": "black"})
        for patch, colour in zip(boxes["boxes"], colours):
            patch.set(facecolor=(*colour, 0.35), edgecolor=colour)
        rng = np.random.default_rng(0)  # fixed jitter: the same data gives the same PNG
        for i, col in enumerate(columns, start=1):
            ax.plot(i + rng.uniform(-0.12, 0.12, col.size), col, "o", markersize=3.5,
                    color=colours[i - 1], alpha=0.8)
    else:
        ax.text(0.5, 0.5, "no cases", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(range(1, k + 1), [str(n) for n in class_names],
                  rotation=30 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set(ylim=(-0.03, 1.03), xlim=(0.4, k + 0.6), ylabel="Dice",
           title=title or f"Dice per class (test cases, n = {values.shape[0]})")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def plot_segmentation_overlays(panels: Sequence[Mapping[str, Any]],
                               class_names: Sequence[str],
                               path: str | os.PathLike[str]) -> Path:
    """One row per case: the image, the truth over it, the prediction over it.

    Classes are drawn as semi-transparent colours with a solid outline (the same colour per
    class in every panel), with a legend naming the foreground classes.

    Args:
        panels: One mapping per row: ``image`` (2D float array), ``truth`` and ``prediction``
            (2D integer label maps of the same shape), ``title`` (row title) and optionally
            ``origin`` (``"upper"``, the default, or ``"lower"`` for matplotlib's
            ``imshow``).
        class_names: The K foreground class names (labels 1..K).
        path: The PNG to write.
    """
    k = len(class_names)
    colours = class_colours(k)
    rows = max(len(panels), 1)
    fig = Figure(figsize=(9.6, 3.3 * rows + 0.5), dpi=DPI, layout="constrained")
    axes = np.asarray(fig.subplots(rows, 3, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    if not panels:
        axes[0, 1].text(0.5, 0.5, "no test cases", ha="center", va="center",
                        transform=axes[0, 1].transAxes)
    for number, (row, panel) in enumerate(zip(axes, panels)):
        image = _display_range(np.asarray(panel["image"], dtype=np.float64))
        origin = panel.get("origin", "upper")
        for ax, labels, name in ((row[0], None, "image"), (row[1], panel["truth"], "ground truth"),
                                 (row[2], panel["prediction"], "prediction")):
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, origin=origin,
                      interpolation="nearest")
            if labels is not None:
                _draw_labels(ax, np.asarray(labels), colours, origin)
            if number == 0:
                ax.set_title(name, fontsize=9)
        row[0].text(-0.08, 0.5, str(panel.get("title", "")), rotation=90, ha="right",
                    va="center", fontsize=9, transform=row[0].transAxes)
    handles = [Patch(facecolor=(*colours[i], OVERLAY_ALPHA), edgecolor=colours[i],
                     label=str(name)) for i, name in enumerate(class_names)]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(k, 6), fontsize=9,
                   frameon=False)
    return _save(fig, path)


def _display_range(image: np.ndarray) -> np.ndarray:
    """Intensities scaled to [0, 1] between the 1st and 99th percentile."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape)
    lo, hi = np.percentile(finite, [1, 99])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((np.nan_to_num(image, nan=lo) - lo) / (hi - lo), 0.0, 1.0)


def _draw_labels(ax: Any, labels: np.ndarray, colours: np.ndarray, origin: str) -> None:
    """Classes as semi-transparent fills with a solid outline in the class colour."""
    ax.imshow(_rgba(labels, colours), origin=origin, interpolation="nearest")
    for index, colour in enumerate(colours, start=1):
        mask = (labels == index).astype(float)
        if 0 < mask.sum() < mask.size and min(mask.shape) >= 2:
            # Pixel (i, j) is at data point (x=j, y=i) for imshow with either origin, and
            # contour's default puts it there too, so outlines match fills.
            ax.contour(mask, levels=[0.5], colors=[colour], linewidths=1.2)


def _rgba(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """An RGBA layer: class ``c`` in ``colours[c - 1]`` at :data:`OVERLAY_ALPHA`, background
    transparent."""
    out = np.zeros((*labels.shape, 4))
    for index, colour in enumerate(colours, start=1):
        mask = labels == index
        out[mask, :3] = colour
        out[mask, 3] = OVERLAY_ALPHA
    return out
