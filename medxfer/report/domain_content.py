"""The report section of a run with target-domain data: source and target test metrics
side by side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medxfer.metric_table import TASKS, label, metric, metrics_for
from medxfer.report.tables import format_value


def add_domain_section(content: Any, summary: Mapping[str, Any]) -> None:
    """Fill ``content.domain_*``: one row per metric, source test beside target test.

    Args:
        content: A :class:`~medxfer.report.content.ReportContent` (modified in place).
        summary: The run summary with ``test`` and ``target_test`` (and optionally
            ``domain_adaptation`` and ``target_source``).
    """
    source = summary.get("test") if isinstance(summary.get("test"), Mapping) else {}
    target = summary["target_test"]
    task = summary.get("task")
    names = [n for n in metrics_for(task if task in TASKS else None, shown_in="domain")
             if n in target]
    content.domain_header = ["Metric", "Source test", "Target test", "Target - source"]
    for name in names:
        s, t = source.get(name), target.get(name)
        diff = t - s if isinstance(s, (int, float)) and isinstance(t, (int, float)) \
            and name != "n" else None
        # a per-class metric's row is its mean over the foreground classes
        title = f"{label(name)} (mean foreground)" if metric(name).per_class else label(name)
        content.domain_rows.append([title, format_value(s), format_value(t),
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
