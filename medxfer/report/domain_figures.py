"""Figures of domain adaptation: source and target features projected by PCA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medxfer.io import atomic_open


def pca_2d(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project source and target features ``[n, F]`` onto the first two principal
    components of their union (``torch.pca_lowrank``, centred)."""
    both = torch.from_numpy(np.concatenate([source, target]).astype(np.float32))
    mean = both.mean(dim=0, keepdim=True)
    q = min(2, both.shape[1], both.shape[0])
    _, _, v = torch.pca_lowrank(both - mean, q=q, center=False, niter=4)
    points = ((both - mean) @ v[:, :2]).numpy()
    if points.shape[1] < 2:
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
    return points[: len(source)], points[len(source):]


def plot_feature_pca(panels: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """One scatter panel per entry ``title -> (source features, target features)``.

    Each panel has its own PCA of its two feature sets; the title gives the distance
    between the two domain means relative to the spread (smaller: better aligned).

    Returns:
        The PNG written (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (title, (source, target)) in zip(axes.flat, panels.items()):
        src, tgt = pca_2d(source, target)
        ax.scatter(src[:, 0], src[:, 1], s=6, alpha=0.5, label="source", color="tab:blue")
        ax.scatter(tgt[:, 0], tgt[:, 1], s=6, alpha=0.5, label="target", color="tab:orange")
        ax.set_title(f"{title}\nmean gap / spread {domain_gap(source, target):.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return path


def domain_gap(source: np.ndarray, target: np.ndarray) -> float:
    """Distance between the domain means over the root-mean-square spread of all features."""
    both = np.concatenate([source, target])
    spread = float(np.sqrt(((both - both.mean(axis=0)) ** 2).sum(axis=1).mean())) or 1.0
    return float(np.linalg.norm(source.mean(axis=0) - target.mean(axis=0)) / spread)
