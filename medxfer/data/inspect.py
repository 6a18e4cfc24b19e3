"""``medxfer data inspect``: what a dataset holds and how medxfer reads it.

Every case is scanned as the checks before training scan it (:mod:`medxfer.data.scan`:
headers, content hashes, every mask read whole); a seeded sample of cases (``max_read``)
is read whole for the intensities and the montage. Each figure says where it comes from
(``headers``, ``every mask``, ``all voxels of N of M cases``). :func:`summary_json` is the
stable JSON form (``--json``), documented in docs/data-formats.md.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medxfer.data.cases import read_case
from medxfer.data.checks import duplicate_files
from medxfer.data.datalist import Datalist
from medxfer.data.inspect_report import SCHEMA_VERSION, to_json  # noqa: F401
from medxfer.data.layouts import build_datalist
from medxfer.data.scan import CaseScan, name_found_classes, scan_cases
from medxfer.errors import DataError

#: Version of :func:`summary_json`'s schema (raised when a key changes meaning or goes).
#: Voxels per case the percentiles are estimated from (min, max and mean use all voxels;
#: MedMNIST: 50 times as many per split array).
PERCENTILE_VOXELS = 20000


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
        datalist: The dataset's cases and how they were read.
        scans: What the scan found for every case (see :class:`medxfer.data.scan.CaseScan`).
        counts: Split (or ``all``) -> class name -> cases (segmentation: cases whose mask
            holds the class, over every mask).
        shapes: Shape ``[C, *spatial]`` -> cases, over every case (headers).
        spacings: Voxel spacing -> cases, over every case (headers).
        dtypes: Stored dtype -> cases, over every case (headers).
        intensity: ``min``, ``max``, ``mean`` over all voxels of the cases read, ``p01`` and
            ``p99`` estimated from evenly spaced voxels (:data:`PERCENTILE_VOXELS` per case).
        intensity_source: Where the intensities come from, in words.
        patients: Distinct patient ids (None when the data has none).
        n_read: How many cases were read whole.
        samples: The cases read, for the montage.
        problems: What a run would refuse (each names its file).
        warnings: What a run would warn about.
    """

    datalist: Datalist
    scans: list[CaseScan] = field(default_factory=list)
    counts: dict[str, Counter] = field(default_factory=dict)
    shapes: Counter = field(default_factory=Counter)
    spacings: Counter = field(default_factory=Counter)
    dtypes: Counter = field(default_factory=Counter)
    intensity: dict[str, float] = field(default_factory=dict)
    intensity_source: str = ""
    patients: int | None = None
    n_read: int = 0
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def summarize_dataset(path: str | os.PathLike[str], *, format: str = "auto",
                      max_read: int = 64, seed: int = 0) -> DatasetSummary:
    """Read a dataset's datalist, scan every case and read a seeded sample whole.

    Args:
        path: Dataset file or folder (any layout :func:`build_datalist` knows).
        format: ``auto`` or a layout name.
        max_read: Read at most this many cases whole for the intensities (MedMNIST: all).
        seed: Seed of the sample.

    Raises:
        DataError: when the dataset's layout or its list of cases cannot be read (a file
            that cannot be read is a problem of the summary, not an error).
    """
    dl = build_datalist(path, format=format)
    summary = DatasetSummary(dl, scans=scan_cases(dl, dl.cases))
    name_found_classes(dl, summary.scans)
    for scan in summary.scans:
        if scan.spatial_dims:
            summary.shapes[(scan.channels, *scan.shape)] += 1
            summary.spacings[scan.spacing] += 1
            summary.dtypes[scan.dtype] += 1
    summary.problems = [s.problem for s in summary.scans if s.problem] + \
        image_problems(summary.scans) + _label_problems(dl, summary.scans)
    summary.warnings = _warnings(dl, summary.scans)
    _read_sample(summary, max_read, seed)
    summary.counts = _counts(dl, summary.scans)
    patients = {c.get("patient_id") for c in dl.cases if c.get("patient_id") not in (None, "")}
    has_ids = dl.format == "manifest" and any("patient_id" in c for c in dl.cases)
    summary.patients = len(patients) if has_ids and patients else None
    return summary


def _read_sample(summary: DatasetSummary, max_read: int, seed: int) -> None:
    """Read ``max_read`` seeded cases whole (MedMNIST: every array) for the intensities."""
    dl = summary.datalist
    ok = [i for i, s in enumerate(summary.scans) if not s.problem]
    order = sorted(np.random.default_rng(seed).permutation(ok)[:max_read].tolist())
    summary.samples = [_read_case(dl, dl.cases[i]) for i in order]
    if dl.medmnist is not None:  # every array is in memory: all of them, at once
        order = ok
        arrays = [a.reshape(len(a), -1) for a in dl.medmnist.images.values()]
    else:
        arrays = [s.image.reshape(1, -1) for s in summary.samples]
    lo, hi, total, count, sampled = np.inf, -np.inf, 0.0, 0, []
    per_block = PERCENTILE_VOXELS if dl.medmnist is None else PERCENTILE_VOXELS * 50
    for block in arrays:
        if not block.size:
            continue
        lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        whole = np.issubdtype(block.dtype, np.integer)
        total += float(block.sum(dtype=np.int64 if whole else np.float64))
        count += block.size
        flat = block.reshape(-1)
        sampled.append(flat[:: max(1, flat.size // per_block)].astype(np.float64))
    summary.n_read = len(order)
    if count:
        every = np.concatenate(sampled)
        summary.intensity = {"min": lo, "max": hi, "mean": total / count,
                             "p01": float(np.percentile(every, 1)),
                             "p99": float(np.percentile(every, 99))}
        scope = "every case" if len(order) == len(dl.cases) else \
            f"{len(order)} of {len(dl.cases)} cases (a seeded sample; --max-read reads more)"
        each = "of each case" if dl.medmnist is None else "of each split's array"
        summary.intensity_source = f"all voxels of {scope}; p01/p99 from up to {per_block} " \
                                   f"evenly spaced voxels {each}"


def image_problems(scans: list[CaseScan], *, examples: int = 3) -> list[str]:
    """Cases whose image differs from most in dimensionality (2D among 3D) or, among those
    of the usual dimensionality, in channels: a run refuses them (one network takes one
    dimensionality and one channel count).

    Returns:
        One line per kind of difference, naming up to ``examples`` files.
    """
    def files(group: list[CaseScan]) -> str:
        names = ", ".join(repr(s.image) for s in group[:examples])
        return names + (f" and {len(group) - examples} more" if len(group) > examples else "")

    readable = [s for s in scans if s.spatial_dims]
    problems: list[str] = []
    dims = Counter(s.spatial_dims for s in readable)
    if not dims:
        return problems
    usual = dims.most_common(1)[0][0]
    for d in sorted(dims):
        if d != usual:
            odd = [s for s in readable if s.spatial_dims == d]
            problems.append(f"{len(odd)} case{'s' if len(odd) != 1 else ''} of {len(readable)} "
                            f"read {'are' if len(odd) != 1 else 'is'} {d}D among {usual}D images "
                            f"({files(odd)}): a run refuses them; drop or convert them")
    same = [s for s in readable if s.spatial_dims == usual]
    channels = Counter(s.channels for s in same)
    common = channels.most_common(1)[0][0]
    for c in sorted(channels):
        if c != common:
            odd = [s for s in same if s.channels == c]
            hint = ("with data.preprocess.channels auto a run refuses them; rgb or grey "
                    "makes grey and colour images agree" if {c, common} == {1, 3} else
                    "a run refuses them; fix or drop them (a 4D NIfTI holds one channel per "
                    "volume), or set data.preprocess.channels: grey")
            problems.append(f"{len(odd)} case{'s' if len(odd) != 1 else ''} of {len(readable)} "
                            f"read {'have' if len(odd) != 1 else 'has'} {c} channel"
                            f"{'s' if c != 1 else ''}, the others {common} ({files(odd)}): {hint}")
    return problems


def _label_problems(dl: Datalist, scans: list[CaseScan]) -> list[str]:
    """What a run refuses about the labels as a whole: one class, or copies in two splits."""
    problems = []
    if dl.label_kind == "class" and len({s.label for s in scans}) < 2:
        problems.append(f"one class only ({len(scans)} cases): a classifier needs at least two")
    if dl.label_kind == "mask" and scans and \
            not any(v for s in scans for v in s.mask_values or () if v > 0):
        problems.append("every mask is empty (all background): nothing to learn")
    try:
        duplicate_files(scans, official=dl.medmnist is not None)
    except DataError as exc:
        problems.append(str(exc))
    return problems


def _warnings(dl: Datalist, scans: list[CaseScan]) -> list[str]:
    warnings = []
    if dl.label_kind == "mask":
        empty = [s for s in scans if s.mask_values is not None and not any(s.mask_values)]
        if empty:
            warnings.append(f"{len(empty)} of {len(scans)} masks are empty (all background), "
                            f"e.g. {empty[0].image!r}")
    try:
        warnings += duplicate_files(scans, official=dl.medmnist is not None,
                                    class_names=dl.class_names)
    except DataError:
        pass  # a problem (see _label_problems)
    unsplit = [s for s in scans if s.split is None and s.digest]
    copies = len(unsplit) - len({s.digest for s in unsplit})
    if copies:
        warnings.append(f"{copies} image{' copies' if copies == 1 else 's copy'} another "
                        "image (identical content): a "
                        "run refuses copies that its split puts in two splits; delete them, or "
                        "give the copies one patient_id")
    return warnings


def _read_case(dl: Datalist, case: dict[str, Any]) -> Sample:
    case = dict(case)
    if dl.medmnist is not None:
        split, index = case["image"].rsplit("#", 1)[1].split("/")
        return Sample(case, dl.medmnist.images[split][int(index)])
    img = read_case(case, "image")
    mask = None
    if dl.label_kind == "mask" and case.get("label"):
        mask = read_case(case, "label").array
    return Sample(case, img.array, mask)


def _counts(dl: Datalist, scans: list[CaseScan]) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    for scan in scans:
        bucket = counts.setdefault(scan.split or "all", Counter())
        if dl.label_kind == "class":
            bucket[dl.class_names[scan.label]] += 1
        elif dl.label_kind == "mask":
            for v in scan.mask_values or ():
                name = dl.class_names[v] if 0 <= v < len(dl.class_names) \
                    else f"class {v} (unnamed: declare data.classes)"
                bucket[name] += 1
        else:
            bucket["cases"] += 1
    return counts


def summary_json(summary: DatasetSummary) -> dict[str, Any]:
    """The stable JSON form of a summary (``medxfer data inspect --json``); the schema is
    documented in docs/data-formats.md ("The JSON form")."""
    return to_json(summary)
