"""The montage of ``medxfer data inspect``: sample images with their labels or masks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medxfer.data.datalist import Datalist
from medxfer.data.inspect import DatasetSummary, Sample


def unique_path(path: Path) -> Path:
    """``path``, or ``stem_1.suffix``, ``stem_2.suffix`` ... when it exists already."""
    if not path.exists():
        return path
    n = 1
    while (candidate := path.with_name(f"{path.stem}_{n}{path.suffix}")).exists():
        n += 1
    return candidate


def save_montage(summary: DatasetSummary, output_dir: str | os.PathLike[str], *,
                 n: int = 16, seed: int = 0) -> Path:
    """Write ``<dataset-name>_montage.png``: sample images with labels or mask overlays.

    3D volumes show the axial slice with the most mask (or the middle slice). An existing
    file is never overwritten: a numeric suffix is added instead.

    Returns:
        The PNG written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dl = summary.datalist
    chosen = _choose(summary, n, seed)
    cols = min(4, max(1, len(chosen)))
    rows = max(1, -(-len(chosen) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, sample in zip(axes.ravel(), chosen):
        image, mask = _display_slice(sample)
        ax.imshow(image, cmap=None if image.ndim == 3 else "gray", interpolation="nearest")
        if mask is not None and mask.any():
            overlay = np.ma.masked_where(mask == 0, mask)
            ax.imshow(overlay, cmap="autumn" if mask.max() <= 1 else "tab10", alpha=0.45,
                      interpolation="nearest", vmin=0, vmax=max(1, int(mask.max())))
        ax.set_title(_caption(dl, sample), fontsize=8)
    fig.suptitle(f"{dl.name}: {len(dl.cases)} cases ({dl.task})", fontsize=10)
    fig.tight_layout()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = unique_path(output_dir / f"{dl.name}_montage.png")
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


def _choose(summary: DatasetSummary, n: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    samples = summary.samples
    if summary.datalist.label_kind != "class":
        idx = rng.permutation(len(samples))[:n]
        return [samples[i] for i in sorted(idx)]
    by_class: dict[int, list[Sample]] = {}
    for i in rng.permutation(len(samples)):
        by_class.setdefault(samples[i].case["label"], []).append(samples[i])
    chosen: list[Sample] = []
    while len(chosen) < n and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(chosen) < n:
                chosen.append(by_class[label].pop())
    return chosen


def _display_slice(sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
    image = sample.image.astype(np.float32)
    mask = sample.mask[0] if sample.mask is not None else None
    if image.ndim == 4:  # [C, i, j, k]: pick an axial slice
        k = int(np.argmax((mask > 0).sum(axis=(0, 1)))) if mask is not None and mask.any() \
            else image.shape[-1] // 2
        image = np.rot90(image[..., k], axes=(1, 2))
        mask = np.rot90(mask[..., k]) if mask is not None else None
    lo, hi = np.percentile(image, [1, 99])
    image = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    image = image[0] if image.shape[0] != 3 else np.moveaxis(image, 0, -1)
    if mask is not None:
        mask = np.where(mask == 255, 1, mask).astype(np.int64)
    return image, mask


def _caption(dl: Datalist, sample: Sample) -> str:
    case = sample.case
    text = str(case["id"])[-24:]
    if dl.label_kind == "class":
        text += f"\n{dl.class_names[case['label']]}"
    elif dl.label_kind == "value":
        text += f"\n{case['label']:.3g}"
    elif sample.mask is not None:
        present = [int(v) for v in np.unique(sample.mask) if v]
        text += "\n" + (", ".join(dl.class_names[min(v, len(dl.class_names) - 1)] if v != 255
                                  else dl.class_names[-1] for v in present) or "empty mask")
    if case.get("split"):
        text += f" [{case['split']}]"
    return text
