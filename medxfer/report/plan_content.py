"""The report section of a planned run (``medxfer run DATA``): each planned choice with its
reason, and the plan's time estimate beside what the run took."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def add_plan_section(content: Any, summary: Mapping[str, Any]) -> None:
    """Fill ``content.plan_rows``/``plan_notes`` from ``summary["plan"]`` (``plan.json``)."""
    plan = summary.get("plan")
    if not isinstance(plan, Mapping):
        return
    content.plan_rows = [[str(r.get("key", "")), str(r.get("value", "")),
                          str(r.get("reason", ""))]
                         for r in plan.get("reasons") or [] if isinstance(r, Mapping)]
    notes = []
    budget = plan.get("budget_seconds")
    estimate = plan.get("estimate") or {}
    if budget:
        notes.append(f"Planned for a budget of {budget:.0f} s on {plan.get('device', '?')} "
                     f"({plan.get('machine', '')}); the rules and their evidence are in "
                     "docs/plan.md.")
    if estimate:
        actual = summary.get("train_seconds")
        took = f"; training took {actual:.0f} s" if isinstance(actual, (int, float)) else ""
        notes.append(f"Estimate: {estimate.get('epochs')} epochs of about "
                     f"{estimate.get('seconds_per_epoch')} s x {estimate.get('members', 1)} "
                     f"network(s), {estimate.get('training_seconds')} s of training{took}.")
    limited = summary.get("time_limit")
    if isinstance(limited, Mapping):
        configured, run = limited.get("epochs_configured"), limited.get("epochs")
        raised = isinstance(configured, int) and isinstance(run, int) and run > configured
        notes.append(f"train.time_limit {'raised' if raised else 'lowered'} the epochs from "
                     f"{configured} to {run}: they ran {'faster' if raised else 'slower'} "
                     "than the probe measured.")
    if plan.get("headline"):
        notes.append(f"Headline metric for this data: {plan['headline'].replace('_', ' ')}.")
    content.plan_notes = notes
