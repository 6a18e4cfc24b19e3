"""The two forms of ``medxfer data inspect``'s report: JSON (stable, documented in
docs/data-formats.md, "The JSON form") and rich tables."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from medxfer.data.cache_estimate import cache_estimate, describe_estimate

#: The version of the JSON form (changes when a key changes meaning or goes).
SCHEMA_VERSION = 1
#: Files of one exclusion reason the tables name (the JSON form names every file).
SHOWN_EXCLUDED = 10


def to_json(summary: Any) -> dict[str, Any]:
    """The JSON form of a :class:`medxfer.data.inspect.DatasetSummary` (plain types only)."""
    dl, scans = summary.datalist, summary.scans
    readable = [s for s in scans if s.spatial_dims]
    dims = Counter(s.spatial_dims for s in readable)
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "path": dl.path,
        "name": dl.name,
        "layout": dl.format,
        "layout_reason": dl.layout_reason,
        "task": dl.task,
        "cases": len(dl.cases),
        "classes": list(dl.class_names) if dl.label_kind in ("class", "mask") else [],
        "class_order": dl.class_order,
        "image_classes": list(dl.image_classes),
        "splits": _splits(summary),
        "split_source": dl.split_source,
        "missing_splits": list(dl.missing_splits),
        "folds": _folds(dl),
        "spatial_dims": dims.most_common(1)[0][0] if dims else None,
        "spatial_dims_found": {str(k): v for k, v in sorted(dims.items())},
        "channels": {str(k): v for k, v in sorted(Counter(s.channels for s in readable).items())},
        "size": _range([s.shape for s in readable], _header_source(readable)),
        "spacing": _range([s.spacing for s in readable], _header_source(readable)),
        "dtypes": dict(sorted(summary.dtypes.items())),
        "intensity": dict(summary.intensity, source=summary.intensity_source,
                          cases_read=summary.n_read) if summary.intensity else None,
        "foreground": _foreground(scans) if dl.label_kind == "mask" else None,
        "target": _target(scans) if dl.label_kind == "value" else None,
        "modality": dl.modality,
        "patients": summary.patients,
        "excluded": [dict(e) for e in dl.excluded],
        "notices": list(dl.notices),
        "warnings": list(summary.warnings),
        "problems": list(summary.problems),
        "cache": cache_estimate(summary),
    }
    return out


def _splits(summary: Any) -> dict[str, Any]:
    cases = Counter(s.split or "all" for s in summary.scans)
    order = [s for s in ("train", "val", "test", "all") if s in cases]
    return {s: {"cases": cases[s], "classes": dict(summary.counts.get(s, {}))}
            for s in order}


def _folds(dl: Any) -> dict[str, int]:
    folds = Counter(c["fold"] for c in dl.cases if c.get("fold") is not None)
    return {str(k): v for k, v in sorted(folds.items())}


def _header_source(readable: list[Any]) -> str:
    read = sum(s.header_source == "read" for s in readable)
    if readable and all(s.header_source == "array" for s in readable):
        return "the arrays of every case"
    return "headers of every case" + (f" ({read} DICOM series read whole)" if read else "")


def _range(values: list[tuple], source: str) -> dict[str, Any] | None:
    if not values or len({len(v) for v in values}) != 1:
        return {"min": None, "max": None, "source": source} if values else None
    array = np.asarray(values, dtype=np.float64)
    as_int = all(float(v).is_integer() for v in array.ravel())
    lo, hi = array.min(axis=0).tolist(), array.max(axis=0).tolist()
    if as_int:
        lo, hi = [int(v) for v in lo], [int(v) for v in hi]
    return {"min": lo, "max": hi, "source": source}


def _foreground(scans: list[Any]) -> dict[str, Any] | None:
    fractions = [s.foreground for s in scans if s.foreground is not None]
    if not fractions:
        return None
    return {"fraction_min": min(fractions), "fraction_mean": float(np.mean(fractions)),
            "fraction_max": max(fractions), "empty_masks": sum(f == 0 for f in fractions),
            "masks": len(fractions), "source": "every mask, read whole"}


def _target(scans: list[Any]) -> dict[str, Any] | None:
    values = [float(s.label) for s in scans if s.label is not None]
    if not values:
        return None
    return {"min": min(values), "max": max(values), "mean": float(np.mean(values))}


def summary_tables(summary: Any) -> list[Any]:
    """Rich tables: an overview, cases per class and split, and the excluded files."""
    from rich.table import Table

    data = to_json(summary)
    dl = summary.datalist
    overview = Table(title=f"{dl.name} ({dl.format}, {dl.task})", show_header=False)
    overview.add_column("key", style="bold")
    overview.add_column("value")
    rows = [("path", dl.path), ("layout", f"{dl.format}: {dl.layout_reason}"),
            ("cases", str(len(dl.cases)))]
    if summary.patients is not None:
        rows.append(("patients", str(summary.patients)))
    if dl.modality:
        rows.append(("modality", dl.modality))
    if data["classes"]:
        rows.append(("classes", ", ".join(f"{i}: {n}" for i, n in enumerate(data["classes"]))
                     + f" (order: {dl.class_order})"))
    if dl.image_classes:
        rows.append(("image classes", ", ".join(dl.image_classes) + " (each case's 'class')"))
    rows.append(("split", dl.split_source or "none stored: a run splits by data.split"))
    if data["folds"]:
        rows.append(("folds", ", ".join(f"{k}: {v}" for k, v in data["folds"].items())))
    rows.append(("shapes [C, *spatial]", _top(summary.shapes) +
                 f" ({data['size']['source'] if data['size'] else 'none read'})"))
    if summary.spacings:
        rows.append(("spacing (mm)", _top(summary.spacings)))
    rows.append(("dtype", _top(summary.dtypes)))
    if summary.intensity:
        i = summary.intensity
        rows.append(("intensity", f"min {i['min']:.4g}, max {i['max']:.4g}, mean {i['mean']:.4g}, "
                     f"p1-p99 {i['p01']:.4g} to {i['p99']:.4g} ({summary.intensity_source})"))
    if data["cache"]:
        rows.append(("run cache", describe_estimate(data["cache"])))
    if data["foreground"]:
        f = data["foreground"]
        rows.append(("foreground", f"{f['fraction_mean']:.3%} of voxels on average (min "
                     f"{f['fraction_min']:.3%}, max {f['fraction_max']:.3%}); {f['empty_masks']} "
                     f"of {f['masks']} masks empty ({f['source']})"))
    for key, value in rows:
        overview.add_row(key, value)
    tables = [overview, _counts_table(summary)]
    if dl.excluded:
        tables.append(_excluded_table(dl.excluded))
    return tables


def _counts_table(summary: Any) -> Any:
    from rich.table import Table

    dl = summary.datalist
    splits = [s for s in ("train", "val", "test", "all") if s in summary.counts]
    names = sorted({n for c in summary.counts.values() for n in c},
                   key=lambda n: dl.class_names.index(n) if n in dl.class_names else 1e9)
    if dl.label_kind not in ("class", "mask"):  # no classes to count (values, no labels)
        names, what = [], "cases"
    else:
        what = "masks holding each class" if dl.label_kind == "mask" else "cases per class"
    counts = Table(title=f"{what}, per split")
    counts.add_column("class")
    for s in splits:
        counts.add_column(s, justify="right")
    for name in names:
        counts.add_row(name, *[str(summary.counts[s].get(name, 0)) for s in splits])
    totals = Counter(s.split or "all" for s in summary.scans)
    counts.add_row("cases", *[str(totals[s]) for s in splits], style="bold")
    return counts


def _excluded_table(excluded: list[dict[str, str]]) -> Any:
    from rich.table import Table

    by_reason: dict[str, list[str]] = defaultdict(list)
    for item in excluded:
        by_reason[item["reason"]].append(item["file"])
    table = Table(title=f"{len(excluded)} files not used (--json lists every one)")
    table.add_column("reason")
    table.add_column("files")
    for reason, files in by_reason.items():
        shown = "\n".join(files[:SHOWN_EXCLUDED])
        more = f"\n... and {len(files) - SHOWN_EXCLUDED} more" \
            if len(files) > SHOWN_EXCLUDED else ""
        table.add_row(f"{reason} ({len(files)})", shown + more)
    return table


def _top(counter: Counter, n: int = 4) -> str:
    items = counter.most_common(n)
    text = ", ".join(f"{k} x{v}" if len(counter) > 1 else f"{k}" for k, v in items)
    return text + (f" (+{len(counter) - n} more)" if len(counter) > n else "")
