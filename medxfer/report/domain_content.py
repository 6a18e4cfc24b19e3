"""The report section of a run with target-domain data: source and target test metrics
side by side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medxfer.report.content import METRIC_LABELS
from medxfer.report.tables import format_value, ordered_metrics

LABELS = {**METRIC_LABELS, "dice": "Dice (mean foreground)", "iou": "IoU (mean foreground)",
          "ece": "ECE"}


def add_domain_section(content: Any, summary: Mapping[str, Any]) -> None:
    """Fill ``content.domain_*``: one row per metric, source test beside target test.

    Args:
        content: A :class:`~medxfer.report.content.ReportContent` (modified in place).
        summary: The run summary with ``test`` and ``target_test`` (and optionally
            ``domain_adaptation`` and ``target_source``).
    """
    source = summary.get("test") if isinstance(summary.get("test"), Mapping) else {}
    target = summary["target_test"]
    names = [n for n in ordered_metrics(source, target) if n in target]
    if summary.get("task") == "segmentation":
        names = [n for n in names if "_" not in n or n == "balanced_accuracy"]
    content.domain_header = ["Metric", "Source test", "Target test", "Target - source"]
    for name in names:
        s, t = source.get(name), target.get(name)
        diff = t - s if isinstance(s, (int, float)) and isinstance(t, (int, float)) \
            and name != "n" else None
        content.domain_rows.append([LABELS.get(name, name), format_value(s), format_value(t),
                                    format_value(diff)])
    method = summary.get("domain_adaptation")
    name = method.get("name") if isinstance(method, Mapping) else None
    content.domain_notes.append(
        (f"Domain adaptation: {name}. " if name else "No domain adaptation (source only). ")
        + "The model runs in the target domain on target data (domain-specific layers follow "
          "it); the decision threshold is the one chosen on the source validation split, "
          "since target labels are not used.")
    if summary.get("target_source"):
        content.domain_notes.append(f"Target data: {summary['target_source']}")
