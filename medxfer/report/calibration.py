"""Calibration figures: the reliability diagram of an ensemble and its members.

Built like :mod:`medxfer.report.figures`: a :class:`matplotlib.figure.Figure` without
``pyplot``, written atomically as PNG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medxfer.report.figures import DPI, _save


def plot_reliability_diagram(curves: Mapping[str, Mapping[str, Any]],
                             path: str | os.PathLike[str], *, highlight: str | None = None,
                             title: str | None = None) -> Path:
    """Accuracy against top-label confidence per bin, one curve per model.

    The upper panel shows each model's per-bin accuracy at its per-bin mean confidence
    (a perfectly calibrated model lies on the diagonal), with its ECE in the legend; the
    ``highlight`` model (the ensemble) is also drawn as bars over the bins, with its gap
    to the diagonal shaded. The lower panel shows how many of the highlighted model's
    cases fall in each bin. Empty bins are left out.

    Args:
        curves: Model name -> :func:`medxfer.metrics.reliability_bins` output, optionally
            with ``ece`` (a float) added.
        path: The PNG to write.
        highlight: The name of the model drawn as bars (default: the last one).
        title: Figure title (default "Reliability diagram").
    """
    names = list(curves)
    highlight = highlight if highlight in curves else (names[-1] if names else None)
    fig = Figure(figsize=(6.0, 6.4), dpi=DPI, layout="constrained")
    ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    if highlight is not None:
        bins = curves[highlight]
        edges = np.asarray(bins["edges"], dtype=np.float64)
        width = np.diff(edges)
        accuracy = np.nan_to_num(np.asarray(bins["accuracy"], dtype=np.float64))
        centres = edges[:-1] + width / 2
        filled = np.asarray(bins["count"]) > 0
        ax.bar(edges[:-1][filled], accuracy[filled], width=width[filled], align="edge",
               color="tab:blue", alpha=0.25, edgecolor="tab:blue", linewidth=0.6)
        ax.bar(edges[:-1][filled], (centres - accuracy)[filled], bottom=accuracy[filled],
               width=width[filled], align="edge", color="crimson", alpha=0.15,
               label=f"{highlight}: gap to diagonal")
        ax_count.bar(edges[:-1], np.asarray(bins["count"]), width=width, align="edge",
                     color="tab:blue", alpha=0.5, edgecolor="tab:blue", linewidth=0.6)
    for name in names:
        bins = curves[name]
        filled = np.asarray(bins["count"]) > 0
        confidence = np.asarray(bins["confidence"], dtype=np.float64)[filled]
        accuracy = np.asarray(bins["accuracy"], dtype=np.float64)[filled]
        ece = bins.get("ece")
        label = name if ece is None or not np.isfinite(ece) else f"{name} (ECE {ece:.3f})"
        strong = name == highlight
        ax.plot(confidence, accuracy, marker="o", markersize=5 if strong else 3,
                linewidth=2.2 if strong else 1.0, alpha=1.0 if strong else 0.75,
                color="tab:blue" if strong else None, label=label, zorder=3 if strong else 2)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="accuracy",
           title=title or "Reliability diagram (top-label confidence)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax_count.set(xlabel="confidence (highest class probability)",
                 ylabel=f"cases{f' ({highlight})' if highlight else ''}")
    ax_count.grid(True, alpha=0.3)
    if not names:
        ax.text(0.5, 0.5, "no predictions", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)
