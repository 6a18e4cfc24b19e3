"""Figures of a ``medxfer compare`` grid (PNG, matplotlib without pyplot).

- ``primary_bars.png``: the main metric (the first comparison column of the metric table:
  accuracy; Dice for segmentation; MAE for regression) per model, mean over seeds with
  ± std error bars;
- ``metrics_grouped.png``: grouped bars of every evaluation metric per model;
- ``confusion_grid.png``: a backbone x strategy grid of test confusion matrices, summed over
  seeds (classification);
- ``heatmap.png``: backbone x strategy heatmap of the main metric;
- ``dice_iou_bars.png``: Dice and IoU per model (segmentation).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from medxfer.metric_table import bounds, lower_is_better, metrics_for, short_label
from medxfer.report.figures import _save


def primary_metric(task: str | None) -> str:
    """The metric the bar chart and heatmap show for ``task`` (classification when None):
    the first of its comparison columns in the metric table."""
    return metrics_for(task or "classification", shown_in="comparison")[0]


def plot_comparison_figures(summary: dict[str, Any], folder: Path) -> list[Path]:
    """Write every figure that applies to the grid's task; return their paths."""
    task = summary.get("task") or "classification"
    rows = summary["rows"]
    main = primary_metric(task)
    paths = [plot_metric_bars(rows, main, folder / "primary_bars.png")]
    grouped = metrics_for(task, shown_in="comparison_bars")
    paths.append(plot_grouped_metrics(rows, grouped, folder / "metrics_grouped.png"))
    grid_rows = [r for r in rows if r["backbone"] in summary["backbones"]]
    paths.append(plot_heatmap(grid_rows, summary["backbones"], summary["strategies"], main,
                              folder / "heatmap.png"))
    if any(r.get("confusion_matrix") for r in grid_rows):  # classification
        paths.append(plot_confusion_grid(grid_rows, summary["backbones"], summary["strategies"],
                                         summary.get("class_names") or [],
                                         folder / "confusion_grid.png"))
    per_class = [m for m in grouped if m in metrics_for(task, per_class=True)]
    if per_class:  # segmentation: Dice and IoU
        paths.append(plot_grouped_metrics(rows, per_class, folder / "dice_iou_bars.png",
                                          title=" and ".join(map(short_label, per_class))))
    return paths


def _stat(row: dict[str, Any], metric: str, key: str = "mean") -> float:
    value = (row["metrics"].get(metric) or {}).get(key)
    return math.nan if value is None else float(value)


def plot_metric_bars(rows: Sequence[dict[str, Any]], metric: str, path: Path) -> Path:
    """One bar per model: the mean of ``metric`` over seeds, ± std error bars."""
    labels = [r["model"] for r in rows]
    means = np.array([_stat(r, metric) for r in rows])
    stds = np.array([_stat(r, metric, "std") for r in rows])
    fig = Figure(figsize=(max(6.0, 0.6 * len(rows) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    colors = [f"C{sorted({r['strategy'] for r in rows}).index(r['strategy'])}" for r in rows]
    ax.bar(x, np.nan_to_num(means), yerr=np.nan_to_num(stds), capsize=3, color=colors)
    for xi, mean in zip(x, means):
        if math.isfinite(mean):
            ax.text(xi, mean, f"{mean:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"test {metric} (mean ± std over seeds)")
    ax.set_title(f"Test {metric} per model")
    finite = means[np.isfinite(means)]
    if finite.size and bounds(metric):
        ax.set_ylim(max(0.0, float(finite.min()) - 0.15), 1.02)
    return _save(fig, path)


def plot_grouped_metrics(rows: Sequence[dict[str, Any]], metrics: Sequence[str], path: Path,
                         title: str = "Test metrics per model") -> Path:
    """Grouped bars: one group per metric, one bar per model, ± std error bars."""
    present = [m for m in metrics if any(m in r["metrics"] for r in rows)]
    width_in = min(16.0, max(7.0, 2.0 + len(present) * (0.3 * len(rows) + 0.5)))
    fig = Figure(figsize=(width_in, 5.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(present))
    for i, row in enumerate(rows):
        means = [_stat(row, m) for m in present]
        stds = [_stat(row, m, "std") for m in present]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, np.nan_to_num(means), width,
               yerr=np.nan_to_num(stds), capsize=2, label=row["model"], color=f"C{i % 10}")
    ax.set_xticks(x, present)
    ax.set_ylabel("test value (mean ± std over seeds)")
    ax.set_title(title)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=7,
               ncol=min(len(rows), 4))
    return _save(fig, path)


def plot_heatmap(rows: Sequence[dict[str, Any]], backbones: Sequence[str],
                 strategies: Sequence[str], metric: str, path: Path) -> Path:
    """Backbone x strategy heatmap of the mean of ``metric``, values written in the cells."""
    grid = np.full((len(backbones), len(strategies)), math.nan)
    for row in rows:
        grid[backbones.index(row["backbone"]), strategies.index(row["strategy"])] = \
            _stat(row, metric)
    fig = Figure(figsize=(1.6 * len(strategies) + 2.5, 0.8 * len(backbones) + 1.8),
                 layout="constrained")
    ax = fig.add_subplot()
    cmap = "viridis_r" if lower_is_better(metric) else "viridis"
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if math.isfinite(value):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white",
                    fontsize=9, fontweight="bold")
    ax.set_xticks(range(len(strategies)), strategies)
    ax.set_yticks(range(len(backbones)), backbones)
    ax.set_title(f"Test {metric}, mean over seeds")
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def plot_confusion_grid(rows: Sequence[dict[str, Any]], backbones: Sequence[str],
                        strategies: Sequence[str], class_names: Sequence[str],
                        path: Path) -> Path:
    """A grid of test confusion matrices (counts summed over seeds, shaded by row share)."""
    fig = Figure(figsize=(2.6 * len(strategies) + 0.5, 2.4 * len(backbones) + 0.6),
                 layout="constrained")
    axes = fig.subplots(len(backbones), len(strategies), squeeze=False)
    by_cell = {(r["backbone"], r["strategy"]): r for r in rows}
    for i, backbone in enumerate(backbones):
        for j, strategy in enumerate(strategies):
            ax = axes[i][j]
            cm = (by_cell.get((backbone, strategy)) or {}).get("confusion_matrix")
            ax.set_title(f"{backbone} / {strategy}", fontsize=8)
            if not cm:
                ax.axis("off")
                continue
            counts = np.asarray(cm, dtype=float)
            share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
            ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
            for (a, b), value in np.ndenumerate(counts):
                ax.text(b, a, f"{int(value)}", ha="center", va="center", fontsize=7,
                        color="white" if share[a, b] > 0.5 else "black")
            names = list(class_names) or [str(k) for k in range(len(counts))]
            ax.set_xticks(range(len(names)), names, fontsize=6, rotation=30)
            ax.set_yticks(range(len(names)), names, fontsize=6)
            if i == len(backbones) - 1:
                ax.set_xlabel("predicted", fontsize=7)
            if j == 0:
                ax.set_ylabel("true", fontsize=7)
    fig.suptitle("Test confusion matrices (summed over seeds)", fontsize=9)
    return _save(fig, path)
