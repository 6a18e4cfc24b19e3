"""The ROC curve as a reader of a diagnostic study expects it.

One curve per positive class (the positive class of a binary task; one-vs-rest for more
classes), with:

* a 95% bootstrap band: the cases are resampled ``n_boot`` times (``eval.bootstrap``) from
  a generator seeded with ``seed``, exactly as :func:`medxfer.metrics.bootstrap_ci`
  resamples them for the report's intervals, and the band holds the middle 95% of the
  resampled curves' sensitivity at each false positive rate; the legend's AUC interval
  comes from the same resamples;
* the operating point: where the run's decisions lie on the curve (the decision threshold
  of a binary task, chosen on validation; the argmax for more classes), with its
  sensitivity and specificity;
* the split and the number of cases (per class) in the title.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics as skm

from medxfer.report.figures import DPI, _save
from medxfer.report.tables import as_list

#: False positive rates at which the resampled curves are compared.
FPR_GRID = np.linspace(0.0, 1.0, 201)
#: More classes than this draw no bands (they would cover each other).
MAX_BANDS = 4


def roc_figure(y_true: Any, probs: Any, class_names: Sequence[str] | None = None, *,
               threshold: float | None = None, n_boot: int = 0, seed: int = 0,
               split: str = "test") -> Figure:
    """The figure of :func:`plot_roc_curve` (for tests and other writers)."""
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64).reshape(y.size, -1)
    num_classes = p.shape[1]
    names = [str(c) for c in (as_list(class_names) or range(num_classes))]
    binary = num_classes == 2
    fig = Figure(figsize=(6.0, 5.9), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="chance")
    classes = [1] if binary else list(range(num_classes))
    resamples = _resamples(y.size, n_boot, seed)
    decided = _decisions(p, threshold)
    skipped = []
    for colour_index, c in enumerate(classes):
        positive = y == c
        if positive.all() or not positive.any():
            skipped.append(names[c])
            continue
        colour = f"C{colour_index}"
        fpr, tpr, _ = skm.roc_curve(positive, p[:, c])
        auc = skm.roc_auc_score(positive, p[:, c])
        band = _band(positive, p[:, c], resamples) if len(classes) <= MAX_BANDS else None
        label = "" if binary else f"{names[c]}: "
        label += f"AUC {auc:.3f}"
        if band is not None and band["auc"] is not None:
            label += f" (95% CI {band['auc'][0]:.3f}-{band['auc'][1]:.3f})"
        ax.plot(fpr, tpr, linewidth=1.8, color=colour, label=label, zorder=3)
        if band is not None:
            ax.fill_between(FPR_GRID, band["low"], band["high"], color=colour, alpha=0.18,
                            linewidth=0, zorder=2,
                            label=f"95% bootstrap band ({band['n']} resamples)"
                            if colour_index == 0 else None)
        _operating_point(ax, positive, decided == c, colour, threshold if binary else None,
                         binary)
    if skipped:
        note = ("ROC undefined: only one class present" if binary
                else f"no curve (class absent or alone): {', '.join(skipped)}")
        ax.text(0.5, 0.55, note, ha="center", transform=ax.transAxes, color="crimson",
                fontsize=9, wrap=True)
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal",
           xlabel="false positive rate (1 - specificity)",
           ylabel="true positive rate (sensitivity)")
    ax.set_title(_title(y, names, binary, split), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=7.5, framealpha=0.9)
    return fig


def plot_roc_curve(y_true: Any, probs: Any, path: str | os.PathLike[str],
                   class_names: Sequence[str] | None = None, *,
                   threshold: float | None = None, n_boot: int = 0, seed: int = 0,
                   split: str = "test") -> Path:
    """ROC curve(s) with a bootstrap band, the AUC and its interval, and the operating point.

    Binary (``probs`` ``[N, 2]``): one curve for the positive class (class 1), its
    operating point at ``threshold`` (0.5, the argmax, when not given). Multi-class: one
    one-vs-rest curve per class, each with the operating point of argmax decisions. A class
    without both positive and negative cases has no curve (noted in the figure), so a
    single-class ``y_true`` still gives a valid, annotated PNG.

    Args:
        y_true: Integer labels ``[N]``.
        probs: Probabilities ``[N, C]``.
        path: The PNG to write.
        class_names: The C class names (default ``0..C-1``).
        threshold: The binary decision threshold (``threshold`` of ``metrics.json``).
        n_boot: Bootstrap resamples of the band (``eval.bootstrap``; 0: no band).
        seed: Seed of the resampling (``train.seed``, as the report's intervals use).
        split: The split the cases come from, for the title.
    """
    return _save(roc_figure(y_true, probs, class_names, threshold=threshold, n_boot=n_boot,
                            seed=seed, split=split), path)


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray | None:
    """Case indices ``[n_boot, n]``: the resamples of :func:`medxfer.metrics.bootstrap_ci`."""
    if n_boot <= 0 or n == 0:
        return None
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _band(positive: np.ndarray, scores: np.ndarray,
          resamples: np.ndarray | None) -> dict[str, Any] | None:
    """The 2.5th and 97.5th percentile of the resampled curves' sensitivity on
    :data:`FPR_GRID`, and the same percentiles of their AUC (resamples holding one class
    only are skipped)."""
    if resamples is None:
        return None
    curves, aucs = [], []
    for idx in resamples:
        truth, score = positive[idx], scores[idx]
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = skm.roc_curve(truth, score)
        curves.append(np.interp(FPR_GRID, fpr, tpr))
        aucs.append(skm.auc(fpr, tpr))
    if not curves:
        return None
    low, high = np.percentile(np.asarray(curves), [2.5, 97.5], axis=0)
    return {"low": low, "high": high, "n": len(curves),
            "auc": tuple(np.percentile(aucs, [2.5, 97.5]))}


def _decisions(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """The predicted class of each case: class 1 at ``probs[:, 1] >= threshold`` (0.5
    when not given) for two classes, the argmax for more."""
    if probs.shape[1] == 2:
        return (probs[:, 1] >= (0.5 if threshold is None else threshold)).astype(np.int64)
    return probs.argmax(axis=1)


def _operating_point(ax: Any, positive: np.ndarray, predicted: np.ndarray, colour: str,
                     threshold: float | None, binary: bool) -> None:
    """Mark (1 - specificity, sensitivity) of the decisions, labelled in the legend."""
    sensitivity = float(predicted[positive].mean())
    specificity = float(1.0 - predicted[~positive].mean())
    rule = (f"threshold {0.5 if threshold is None else threshold:.3f}" if binary
            else "argmax")
    ax.plot([1.0 - specificity], [sensitivity], "o", markersize=8, zorder=5,
            markerfacecolor="white" if not binary else colour, markeredgecolor="black",
            markeredgewidth=1.2,
            label=f"operating point ({rule}): sensitivity {sensitivity:.2f}, "
                  f"specificity {specificity:.2f}")


def _title(y: np.ndarray, names: list[str], binary: bool, split: str) -> str:
    counts = np.bincount(y, minlength=len(names))
    if binary:
        return (f"ROC, {split} split (n = {y.size}: {counts[1]} {names[1]}, "
                f"{counts[0]} {names[0]})\npositive class: {names[1]}")
    per_class = ", ".join(f"{counts[i]} {name}" for i, name in enumerate(names))
    return f"ROC one-vs-rest, {split} split (n = {y.size}: {per_class})"
