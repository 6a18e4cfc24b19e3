"""The domain-adaptation study table: source only, each method and the target-supervised
upper bound, with the share of the source-to-target gap each method closes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SOURCE_ONLY = "source_only"
SUPERVISED = "target_supervised"


def gap_closed(method: float, source_only: float, supervised: float) -> float:
    """``(method - source_only) / (supervised - source_only)``; NaN when the gap is not
    positive (nothing to close) or a value is missing."""
    values = (method, source_only, supervised)
    if any(v is None or not math.isfinite(v) for v in values) or supervised <= source_only:
        return float("nan")
    return (method - source_only) / (supervised - source_only)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    arr = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def study_rows(runs: Mapping[str, Sequence[Mapping[str, Any]]], *,
               metrics: Sequence[str] = ("accuracy", "auc")) -> list[dict[str, Any]]:
    """One row per condition from each run's ``metrics.json`` summary.

    Args:
        runs: Condition name -> the summaries of its seeds. ``source_only`` and
            ``target_supervised`` give the two ends of the gap; the target number of every
            condition is its ``target_test`` metric.
        metrics: Metric names of the target (and source) test splits to report.

    Returns:
        Rows with ``condition``, ``seeds``, ``target_<m>`` / ``source_<m>`` as
        ``(mean, sd)`` and ``gap_closed_<m>`` (of the means; NaN without both ends).
    """
    means: dict[str, dict[str, float]] = {}
    rows = []
    for condition, summaries in runs.items():
        row: dict[str, Any] = {"condition": condition, "seeds": len(summaries)}
        for metric in metrics:
            for split, key in (("target", "target_test"), ("source", "test")):
                # the supervised bound trains and tests on the target: no source number
                skip = split == "source" and condition == SUPERVISED
                row[f"{split}_{metric}"] = _mean_sd(
                    [] if skip else [(s.get(key) or {}).get(metric) for s in summaries])
            means.setdefault(condition, {})[metric] = row[f"target_{metric}"][0]
        rows.append(row)
    for row in rows:
        for metric in metrics:
            lo = means.get(SOURCE_ONLY, {}).get(metric, float("nan"))
            hi = means.get(SUPERVISED, {}).get(metric, float("nan"))
            row[f"gap_closed_{metric}"] = gap_closed(row[f"target_{metric}"][0], lo, hi)
    return rows


def study_markdown(rows: Sequence[Mapping[str, Any]], *,
                   metrics: Sequence[str] = ("accuracy", "auc")) -> str:
    """The rows of :func:`study_rows` as a Markdown table (mean ± sd over seeds; the gap
    closed is computed from the means)."""
    header = ["condition", "seeds"]
    for metric in metrics:
        header += [f"target {metric}", f"gap closed ({metric})"]
    header += [f"source {metrics[0]}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def fmt(pair: tuple[float, float]) -> str:
        mean, sd = pair
        return "n/a" if not math.isfinite(mean) else f"{mean:.3f} ± {sd:.3f}"

    for row in rows:
        cells = [str(row["condition"]), str(row["seeds"])]
        for metric in metrics:
            gap = row[f"gap_closed_{metric}"]
            cells += [fmt(row[f"target_{metric}"]),
                      "n/a" if not math.isfinite(gap) else f"{round(100 * gap)}%"]
        cells += [fmt(row[f"source_{metrics[0]}"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
