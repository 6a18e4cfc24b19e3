"""How much memory a run's data cache takes, estimated from the headers alone
(``medxfer data inspect``), against this machine's default ``data.cache: auto`` budget."""

from __future__ import annotations

import math
from typing import Any

from medxfer.memory_size import DEFAULT_MEMORY_SHARE, available_memory, format_bytes


def cache_estimate(summary: Any) -> dict[str, Any] | None:
    """The cache a run with the default preprocessing (no resizing or resampling) fills.

    Each case takes its voxels times its channels at 1 byte (8-bit 2D images, which
    ``intensity: auto`` scales by 1/255 and the cache keeps as uint8) or 4 (float32:
    every other image once normalised), plus 1 byte per voxel for a mask. MedMNIST arrays
    are held as stored.

    Args:
        summary: A :class:`medxfer.data.inspect.DatasetSummary`.

    Returns:
        ``{"bytes", "per_case_max", "stored_as", "budget", "budget_source", "in_memory",
        "assumes"}``, or None when no case could be read.
    """
    dl = summary.datalist
    available = available_memory()
    budget = int(DEFAULT_MEMORY_SHARE * available)
    base = {"budget": budget,
            "budget_source": f"{DEFAULT_MEMORY_SHARE:.0%} of {format_bytes(available)} "
                             "available now (data.cache_memory sets it)"}
    if dl.medmnist is not None:
        total = sum(int(a.nbytes) for a in dl.medmnist.images.values())
        return {"bytes": total, "per_case_max": max(
            (int(a[0].nbytes) for a in dl.medmnist.images.values() if len(a)), default=0),
            "stored_as": "uint8 arrays, held in memory as stored", **base, "in_memory": 1.0,
            "assumes": "the .npz arrays (resized per item, not cached)"}
    readable = [s for s in summary.scans if s.spatial_dims and not s.problem]
    if not readable:
        return None
    sizes, kinds = [], set()
    masks = dl.label_kind == "mask"
    for scan in readable:
        voxels = math.prod(scan.shape)
        compact = scan.spatial_dims == 2 and str(scan.dtype) == "uint8"
        kinds.add("uint8" if compact else "float32")
        sizes.append(voxels * scan.channels * (1 if compact else 4) + (voxels if masks else 0))
    total = sum(sizes)
    in_memory = 1.0 if total <= budget else _share_that_fits(sizes, budget)
    return {"bytes": total, "per_case_max": max(sizes), "stored_as": " and ".join(sorted(kinds)),
            **base, "in_memory": in_memory,
            "assumes": "the default data.preprocess (data.preprocess.image_size and spacing "
                       "change it)"}


def _share_that_fits(sizes: list[int], budget: int) -> float:
    """The share of cases that fit in ``budget``, filled in order."""
    used = kept = 0
    for size in sizes:
        if used + size > budget:
            break
        used, kept = used + size, kept + 1
    return kept / len(sizes)


def describe_estimate(estimate: dict[str, Any]) -> str:
    """One line for ``data inspect``'s table."""
    text = (f"about {format_bytes(estimate['bytes'])} ({estimate['stored_as']}; "
            f"{estimate['assumes']})")
    budget = f"the default budget, {format_bytes(estimate['budget'])} " \
             f"({estimate['budget_source']})"
    if estimate["in_memory"] >= 1.0:
        return f"{text}: fits in {budget}"
    return (f"{text}: {estimate['in_memory']:.0%} of the cases fit in {budget}; the rest are "
            "cached on disk in the run folder")
