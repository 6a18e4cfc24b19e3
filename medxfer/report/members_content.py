"""The report section of a deep-ensemble run (``ensemble.members > 1``): each member's test
metrics beside the members' mean and the ensemble's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medxfer.metric_table import metrics_for, short_label
from medxfer.report.tables import as_number, display_epoch, format_value, ordered_metrics


def add_members_section(content: Any, summary: Mapping[str, Any]) -> None:
    """Fill ``content.member_*``: one row per member (seed, epochs, training time, test
    metrics), then the members' mean and the ensemble.

    Args:
        content: A :class:`~medxfer.report.content.ReportContent` (modified in place).
        summary: The run summary with ``ensemble`` (see
            :func:`medxfer.workflows.deep_ensemble.ensemble_info`) and ``test``.
    """
    info = summary["ensemble"]
    members = [m for m in info.get("member_runs") or [] if isinstance(m, Mapping)]
    test = summary.get("test") if isinstance(summary.get("test"), Mapping) else {}
    present = ordered_metrics(*(m.get("test") or {} for m in members), test)
    names = [n for n in metrics_for(None, shown_in="members") if n in present]
    content.member_header = ["Model", "Seed", "Kept epoch", "Training time (s)",
                             *(f"Test {short_label(n)}" for n in names)]
    for m in members:
        metrics = m.get("test") or {}
        content.member_rows.append([f"{m.get('label')} ({m.get('run')})",
                                    format_value(m.get("seed")), display_epoch(m.get("best_epoch")),
                                    _seconds(m.get("train_seconds")),
                                    *(format_value(metrics.get(n)) for n in names)])
    mean = (info.get("member_mean") or {}).get("test") or {}
    content.member_rows.append(["mean of the members", "", "", "",
                                *(format_value(mean.get(n)) for n in names)])
    content.member_rows.append([f"ensemble ({info.get('members')} members)", "", "",
                                _seconds(info.get("train_seconds_sum")),
                                *(format_value(test.get(n)) for n in names)])
    content.member_notes.append(
        f"The ensemble's output is the {info.get('combine', 'mean of its members')}. Each "
        "member is an ordinary run in its folder (its own report there), with its own "
        "decision threshold chosen on validation; the ensemble's threshold is chosen on "
        "validation from the averaged outputs.")
    most, trained = info.get("members_most"), info.get("members")
    if isinstance(most, int) and isinstance(trained, int) and most > trained:
        content.member_notes.append(
            f"{trained} of up to {most} members were trained: ensemble.time_limit "
            f"({_seconds(info.get('time_limit'))} s) left too little time for another.")


def _seconds(value: Any) -> str:
    number = as_number(value)
    return format_value(None) if number is None else f"{number:.0f}"
