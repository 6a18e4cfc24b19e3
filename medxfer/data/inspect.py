"""Dataset inspection: counts, shapes, spacings, intensities, patients; a sample montage."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medxfer.data.datalist import Datalist, build_datalist
from medxfer.data.readers import read_case


@dataclass
class Sample:
    """One case read for inspection: display arrays ``[C, *spatial]`` and its mask."""

    case: dict[str, Any]
    image: np.ndarray
    mask: np.ndarray | None = None


@dataclass
class DatasetSummary:
    """What :func:`summarize_dataset` found.

    Attributes:
        datalist: The dataset's cases.
        counts: Split (or ``all``) -> class name -> cases (segmentation: cases whose sampled
            mask contains the class).
        shapes: Spatial shape (with channels) -> cases, over the cases read.
        spacings: Voxel spacing -> cases, over the cases read.
        dtypes: Stored dtype -> cases, over the cases read.
        intensity: ``min``, ``max``, ``mean``, ``p01``, ``p99`` over the cases read.
        patients: Distinct patient ids (None when the data has none).
        n_read: How many cases were read for shapes and intensities.
        samples: The cases read, for the montage.
        problems: What a run would refuse, over the cases read: cases whose image
            dimensionality or channels differ from the others' (see :func:`image_problems`).
    """

    datalist: Datalist
    counts: dict[str, Counter] = field(default_factory=dict)
    shapes: Counter = field(default_factory=Counter)
    spacings: Counter = field(default_factory=Counter)
    dtypes: Counter = field(default_factory=Counter)
    intensity: dict[str, float] = field(default_factory=dict)
    patients: int | None = None
    n_read: int = 0
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def summarize_dataset(path: str | os.PathLike[str], *, format: str = "auto",
                      max_read: int = 64, seed: int = 0) -> DatasetSummary:
    """Read a dataset's datalist and a seeded sample of its cases.

    Args:
        path: Dataset file or folder (any layout :func:`build_datalist` knows).
        format: ``auto`` or a layout name.
        max_read: Read at most this many files for shapes/intensities (MedMNIST: all).
        seed: Seed of the sample.

    Raises:
        DataError: when the dataset or one of the sampled files cannot be read.
    """
    dl = build_datalist(path, format=format)
    summary = DatasetSummary(dl)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dl.cases))[:max_read] if dl.medmnist is None else \
        np.arange(len(dl.cases))
    values: list[np.ndarray] = []
    for i in sorted(order.tolist()):
        sample = _read_case(dl, dl.cases[i])
        summary.samples.append(sample)
        summary.shapes[tuple(sample.image.shape)] += 1
        summary.dtypes[sample.case.get("_dtype", "")] += 1
        if sample.case.get("_spacing"):
            summary.spacings[sample.case["_spacing"]] += 1
        if dl.medmnist is None or len(values) < 2000:
            values.append(sample.image.ravel()[:: max(1, sample.image.size // 20000)])
    if values:
        flat = np.concatenate(values).astype(np.float64)
        summary.intensity = {"min": float(flat.min()), "max": float(flat.max()),
                             "mean": float(flat.mean()), "p01": float(np.percentile(flat, 1)),
                             "p99": float(np.percentile(flat, 99))}
    if dl.medmnist is not None:
        arrays = dl.medmnist.images.values()
        summary.intensity.update(min=float(min(a.min() for a in arrays)),
                                 max=float(max(a.max() for a in arrays)))
    summary.n_read = len(summary.samples)
    if dl.medmnist is None:
        summary.problems = image_problems(summary.samples)
    summary.counts = _counts(dl, summary.samples)
    patients = {c.get("patient_id") for c in dl.cases if c.get("patient_id") not in (None, "")}
    has_ids = dl.format == "manifest" and any("patient_id" in c for c in dl.cases)
    summary.patients = len(patients) if has_ids and patients else None
    return summary


def image_problems(samples: list[Sample], *, examples: int = 3) -> list[str]:
    """Cases whose image differs from most of ``samples`` in dimensionality (2D among 3D)
    or, among those of the usual dimensionality, in channels: a run refuses them (one
    network takes one dimensionality and one channel count).

    Returns:
        One line per kind of difference, naming up to ``examples`` files.
    """
    def files(group: list[Sample]) -> str:
        names = ", ".join(repr(str(s.case["image"])) for s in group[:examples])
        return names + (f" and {len(group) - examples} more" if len(group) > examples else "")

    problems = []
    dims = Counter(s.image.ndim - 1 for s in samples)
    if not dims:
        return problems
    usual = dims.most_common(1)[0][0]
    for d in sorted(dims):
        if d != usual:
            odd = [s for s in samples if s.image.ndim - 1 == d]
            problems.append(f"{len(odd)} case{'s' if len(odd) != 1 else ''} of {len(samples)} "
                            f"read {'are' if len(odd) != 1 else 'is'} {d}D among {usual}D images "
                            f"({files(odd)}): a run refuses them; drop or convert them")
    same = [s for s in samples if s.image.ndim - 1 == usual]
    channels = Counter(int(s.image.shape[0]) for s in same)
    common = channels.most_common(1)[0][0]
    for c in sorted(channels):
        if c != common:
            odd = [s for s in same if s.image.shape[0] == c]
            hint = ("with data.preprocess.channels auto a run refuses them; rgb or grey "
                    "makes grey and colour images agree" if {c, common} == {1, 3} else
                    "a run refuses them; fix or drop them (a 4D NIfTI holds one channel per "
                    "volume), or set data.preprocess.channels: grey")
            problems.append(f"{len(odd)} case{'s' if len(odd) != 1 else ''} of {len(samples)} "
                            f"read {'have' if len(odd) != 1 else 'has'} {c} channel"
                            f"{'s' if c != 1 else ''}, the others {common} ({files(odd)}): {hint}")
    return problems


def _read_case(dl: Datalist, case: dict[str, Any]) -> Sample:
    case = dict(case)
    if dl.medmnist is not None:
        split, index = case["image"].rsplit("#", 1)[1].split("/")
        image = dl.medmnist.images[split][int(index)]
        case["_dtype"] = str(image.dtype)
        return Sample(case, image)
    img = read_case(case, "image")
    case["_dtype"] = img.meta.get("dtype", str(img.array.dtype))
    case["_spacing"] = tuple(round(s, 3) for s in img.spacing)
    mask = None
    if dl.label_kind == "mask" and case.get("label"):
        mask = read_case(case, "label").array
    return Sample(case, img.array, mask)


def _counts(dl: Datalist, samples: list[Sample]) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    if dl.label_kind == "class":
        for c in dl.cases:
            counts.setdefault(c.get("split") or "all", Counter())[dl.class_names[c["label"]]] += 1
    elif dl.label_kind == "mask":
        for s in samples:
            present = np.unique(s.mask) if s.mask is not None else []
            bucket = counts.setdefault(s.case.get("split") or "all (sampled)", Counter())
            for v in present:
                v = 1 if v == 255 and len(dl.class_names) == 2 else int(v)
                name = dl.class_names[v] if 0 <= v < len(dl.class_names) \
                    else f"class {v} (unnamed: declare data.classes)"
                bucket[name] += 1
    else:
        for c in dl.cases:
            counts.setdefault(c.get("split") or "all", Counter())["cases"] += 1
    return counts


def summary_tables(summary: DatasetSummary) -> list[Any]:
    """Rich tables: an overview and counts per class and split."""
    from rich.table import Table

    dl = summary.datalist
    overview = Table(title=f"{dl.name} ({dl.format}, {dl.task})", show_header=False)
    overview.add_column("key", style="bold")
    overview.add_column("value")
    overview.add_row("path", dl.path)
    overview.add_row("cases", str(len(dl.cases)))
    if summary.patients is not None:
        overview.add_row("patients", str(summary.patients))
    if dl.modality:
        overview.add_row("modality", dl.modality)
    if dl.class_names:
        overview.add_row("classes", ", ".join(f"{i}: {n}" for i, n in enumerate(dl.class_names)))
    overview.add_row("read", f"{summary.n_read} of {len(dl.cases)} cases")
    overview.add_row("shapes [C, *spatial]", _top(summary.shapes))
    if summary.spacings:
        overview.add_row("spacing (mm)", _top(summary.spacings))
    overview.add_row("dtype", _top(summary.dtypes))
    if summary.intensity:
        i = summary.intensity
        overview.add_row("intensity", f"min {i['min']:.4g}, max {i['max']:.4g}, mean "
                         f"{i.get('mean', float('nan')):.4g}, p1-p99 {i.get('p01', float('nan')):.4g}"
                         f" to {i.get('p99', float('nan')):.4g}")
    tables = [overview]
    if summary.counts:
        splits = list(summary.counts)
        names = sorted({n for c in summary.counts.values() for n in c},
                       key=lambda n: dl.class_names.index(n) if n in dl.class_names else 1e9)
        counts = Table(title="cases per class and split")
        counts.add_column("class")
        for s in splits:
            counts.add_column(s, justify="right")
        for name in names:
            counts.add_row(name, *[str(summary.counts[s].get(name, 0)) for s in splits])
        if dl.label_kind != "mask":
            counts.add_row("total", *[str(sum(summary.counts[s].values())) for s in splits],
                           style="bold")
        tables.append(counts)
    return tables


def _top(counter: Counter, n: int = 4) -> str:
    items = counter.most_common(n)
    text = ", ".join(f"{k} x{v}" if len(counter) > 1 else f"{k}" for k, v in items)
    return text + (f" (+{len(counter) - n} more)" if len(counter) > n else "")


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
