"""Segmentation figures as PNG: Dice per class over cases, prediction/truth overlays with
the errors in their own colours.

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
    """Write :func:`segmentation_overlays_figure` as a PNG at ``path``."""
    return _save(segmentation_overlays_figure(panels, class_names), path)


def segmentation_overlays_figure(panels: Sequence[Mapping[str, Any]],
                                 class_names: Sequence[str]) -> Figure:
    """One row per case: the image, the truth over it, the prediction over it, and the
    errors: missed voxels (false negatives), extra voxels (false positives) and, with
    several classes, voxels given the wrong class, each in its own colour.

    Classes are drawn as semi-transparent colours with a solid outline (the same colour per
    class in every panel); a legend below names the classes and the error colours. A slice
    of a volume names its plane (axial, coronal, sagittal) and its edges (``R``/``L``,
    ``A``/``P``, ``S``/``I``) when the orientation is known.

    Args:
        panels: One mapping per row: ``image`` (2D float array), ``truth`` and ``prediction``
            (2D integer label maps of the same shape), ``title`` (row title), optionally
            ``origin`` (``"upper"``, the default, or ``"lower"`` for matplotlib's
            ``imshow``) and ``edges`` (``{"left": "L", "right": "R", "bottom": "P",
            "top": "A"}``: the direction each image edge faces, from :func:`slice_view`).
        class_names: The K foreground class names (labels 1..K).
    """
    k = len(class_names)
    colours = class_colours(k)
    rows = max(len(panels), 1)
    fig = Figure(figsize=(12.4, 3.2 * rows + 0.7), dpi=DPI, layout="constrained")
    axes = np.asarray(fig.subplots(rows, 4, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    if not panels:
        axes[0, 1].text(0.5, 0.5, "no test cases", ha="center", va="center",
                        transform=axes[0, 1].transAxes)
    for number, (row, panel) in enumerate(zip(axes, panels)):
        image = _display_range(np.asarray(panel["image"], dtype=np.float64))
        truth, prediction = np.asarray(panel["truth"]), np.asarray(panel["prediction"])
        origin = panel.get("origin", "upper")
        for ax, name in zip(row, ("image", "ground truth", "prediction",
                                  "errors (vs ground truth)")):
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, origin=origin,
                      interpolation="nearest")
            _edge_letters(ax, panel.get("edges") or {})
            if number == 0:
                ax.set_title(name, fontsize=9)
        _draw_labels(row[1], truth, colours, origin)
        _draw_labels(row[2], prediction, colours, origin)
        row[3].imshow(_error_rgba(truth, prediction), origin=origin,
                      interpolation="nearest")
        row[0].text(-0.1, 0.5, str(panel.get("title", "")), rotation=90, ha="right",
                    va="center", fontsize=9, transform=row[0].transAxes)
    handles = [Patch(facecolor=(*colours[i], OVERLAY_ALPHA), edgecolor=colours[i],
                     label=str(name)) for i, name in enumerate(class_names)]
    handles += [Patch(facecolor=colour, label=label) for label, colour in
                _error_legend(k)]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
                   fontsize=9, frameon=False)
    return fig


#: The plane a slice lies in, by the direction of the axis it is taken along.
PLANES = {"L": "sagittal", "R": "sagittal", "A": "coronal", "P": "coronal", "S": "axial",
          "I": "axial"}
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}
#: Colours of the error panel: missed (false negative), extra (false positive) and, with
#: several foreground classes, wrong-class voxels.
ERROR_COLOURS = {"missed (false negative)": (1.0, 0.84, 0.0),
                 "extra (false positive)": (1.0, 0.0, 1.0),
                 "wrong class": (0.0, 0.9, 1.0)}


def slice_view(axcodes: str | Sequence[str] | None, axis: int) -> dict[str, Any]:
    """How a slice of a volume taken along ``axis`` reads, drawn as
    ``np.take(volume, i, axis).T`` with ``origin="lower"``.

    Args:
        axcodes: The direction each array axis points to, as nibabel and MONAI name it
            (``"RAS"``: axis 0 towards the right, 1 anterior, 2 superior), or None.
        axis: The axis the slice is taken along (0, 1 or 2).

    Returns:
        ``{"plane": "axial", "edges": {"left": "L", "right": "R", "bottom": "P",
        "top": "A"}}``; without (valid) axis codes ``{"plane": "axis 2", "edges": {}}``.
    """
    codes = [str(c).upper() for c in (axcodes or "")]
    if len(codes) != 3 or any(c not in PLANES for c in codes) or \
            len({PLANES[c] for c in codes}) != 3:
        return {"plane": f"axis {axis}", "edges": {}}
    across, up = (a for a in range(3) if a != axis)
    return {"plane": PLANES[codes[axis]],
            "edges": {"right": codes[across], "left": _OPPOSITE[codes[across]],
                      "top": codes[up], "bottom": _OPPOSITE[codes[up]]}}


def _edge_letters(ax: Any, edges: Mapping[str, str]) -> None:
    """The direction each image edge faces, in small letters inside the edges."""
    places = {"left": (0.02, 0.5, "left", "center"), "right": (0.98, 0.5, "right", "center"),
              "top": (0.5, 0.98, "center", "top"), "bottom": (0.5, 0.02, "center", "bottom")}
    for edge, letter in edges.items():
        x, y, ha, va = places[edge]
        ax.text(x, y, letter, transform=ax.transAxes, ha=ha, va=va, fontsize=8,
                color="white", fontweight="bold",  # on a dark patch: readable on bright tissue
                bbox={"facecolor": "black", "alpha": 0.55, "edgecolor": "none", "pad": 1.5})


def _error_rgba(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Missed, extra and wrong-class voxels in :data:`ERROR_COLOURS`, the rest transparent."""
    out = np.zeros((*truth.shape, 4))
    missed = (truth > 0) & (prediction == 0)
    extra = (truth == 0) & (prediction > 0)
    wrong = (truth > 0) & (prediction > 0) & (truth != prediction)
    for mask, label in ((missed, "missed (false negative)"), (extra, "extra (false positive)"),
                        (wrong, "wrong class")):
        out[mask, :3] = ERROR_COLOURS[label]
        out[mask, 3] = 0.85
    return out


def _error_legend(num_foreground: int) -> list[tuple[str, tuple[float, float, float]]]:
    labels = list(ERROR_COLOURS)[: 3 if num_foreground > 1 else 2]
    return [(label, ERROR_COLOURS[label]) for label in labels]


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
