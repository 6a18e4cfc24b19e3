"""The segmentation sections of a run report: metrics per class, spacing, figure captions.

:func:`~medxfer.report.content.build_report_content` calls :func:`add_segmentation_sections`
for a task with per-class metrics (segmentation), in place of the one-table metric section
that classification and regression reports have.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from medxfer.metric_table import TASKS, metric, metrics_for
from medxfer.metric_table import label as metric_label
from medxfer.report.tables import (
    NA,
    as_list,
    as_number,
    ci_bounds,
    format_ci,
    format_value,
    ordered_metrics,
)
from medxfer.tasks.segmentation.metrics import class_key

CAPTIONS = {
    "dice_per_class": "Dice per class over the test cases (box: quartiles; dots: cases)",
    "segmentation_overlays": "Best, median and worst test case by mean Dice: truth and "
                             "prediction over the image (3D: the slice with most foreground)",
}
EDGE_CASE_NOTE = ("A class absent from both truth and prediction scores Dice 1, IoU 1, HD95 0; "
                  "absent from only one of them, Dice 0, IoU 0 and HD95 the image diagonal.")


def add_segmentation_sections(content: Any, summary: Mapping[str, Any]) -> None:
    """Fill ``content``'s per-class table, the other-metrics table, a spacing line and the
    captions of the segmentation figures.

    Args:
        content: A :class:`~medxfer.report.content.ReportContent` (modified in place).
        summary: The run summary: ``val``, ``test``, ``ci95``, ``class_names``,
            ``spacing``, ``spacing_assumed``, ``bootstrap``, ``per_case``.
    """
    val = _mapping(summary.get("val"))
    test = _mapping(summary.get("test"))
    ci = _mapping(summary.get("ci95"))
    classes = _foreground(summary, val, test)
    has_ci = any(None not in ci_bounds(bounds) for bounds in ci.values())
    task = summary.get("task")
    per_class_metrics = metrics_for(task if task in TASKS else None, per_class=True)
    suffix = ", 95% CI" if has_ci else ""
    if any(m in val or m in test for m in per_class_metrics) or classes:
        content.class_header = ["Class"]
        for name in per_class_metrics:
            title = metric_label(name)
            if metric(name).unit:
                title += f" ({_distance_unit(summary)})"
            content.class_header += [f"{title} val", f"{title} test{suffix}"]
        for name, key in [*classes, ("Mean (foreground)", "")]:
            row = [name]
            for base in per_class_metrics:
                full = f"{base}_{key}" if key else base
                row += [format_value(val.get(full)), format_ci(test.get(full), ci.get(full))]
            content.class_rows.append(row)
        if has_ci:
            n_boot = as_number(summary.get("bootstrap"))
            resamples = f"{int(n_boot)} resamples, " if n_boot else ""
            content.class_notes.append(
                f"95% CI: percentile bootstrap over test cases ({resamples}fixed seed).")
        content.class_notes.append("Per-class values are means over cases; the mean row "
                                   "averages the foreground classes (background is not scored).")
        content.class_notes.append(EDGE_CASE_NOTE)
    per_class = {*per_class_metrics} | {f"{m}_{k}" for m in per_class_metrics
                                         for _, k in classes}
    others = [n for n in ordered_metrics(val, test) if n not in per_class and n != "n"]
    others += ["n"] if "n" in val or "n" in test else []
    if others:
        content.metric_header = ["Metric", "Validation", "Test (95% CI)" if has_ci else "Test"]
        for name in others:
            content.metric_rows.append([metric_label(name), format_value(val.get(name)),
                                        format_ci(test.get(name), ci.get(name))])
        content.metric_notes.append("Foreground fraction: each class's share of the voxels; "
                                    "MAE/MSE of predicted against true share over cases and "
                                    "foreground classes.")
        content.metric_notes.append(f"{NA}: undefined on this data or not computed.")
    spacing = as_list(summary.get("spacing"))
    if spacing:
        text = " × ".join(f"{v:g}" if as_number(v) is not None else NA for v in spacing)
        text += (" (assumed: data.preprocess.spacing is unset, so HD95 is in voxels)"
                 if summary.get("spacing_assumed") else " mm (data.preprocess.spacing)")
        content.info.append(("Voxel spacing for HD95", text))
    if summary.get("per_case"):
        content.info.append(("Per-case metrics", str(summary["per_case"])))
    content.figures = [(path, CAPTIONS.get(_stem(path), caption))
                       for path, caption in content.figures]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _foreground(summary: Mapping[str, Any], *tables: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(display name, key)`` of every foreground class, from ``class_names`` (background
    first) or, without them, from the ``dice_<key>`` entries."""
    names = as_list(summary.get("class_names"))
    if names and len(names) >= 2:
        return [(str(n), class_key(str(n))) for n in names[1:]]
    keys: list[str] = []
    for table in tables:
        keys += [k.removeprefix("dice_") for k in table
                 if k.startswith("dice_") and k.removeprefix("dice_") not in keys]
    return [(k, k) for k in keys]


def _distance_unit(summary: Mapping[str, Any]) -> str:
    """mm, or voxels when the run had no voxel spacing (HD95 is then in voxels)."""
    if summary.get("spacing_assumed") or summary.get("spacing") is None:
        return "voxels"
    return "mm"


def _stem(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return re.sub(r"\.[^.]*$", "", name)
