"""``medxfer plan``: a complete run config from a dataset's fingerprint, rules and a budget.

:func:`make_plan` reads the dataset (as ``medxfer data inspect`` does), applies the rules of
:mod:`medxfer.planning.rules` (each choice with a reason), measures the planned network's
speed on this machine (:mod:`medxfer.planning.probe`) and fits epochs, input size and
ensemble members into the time budget (:mod:`medxfer.planning.planner`). The result is a
:class:`Plan`, written as a commented ``plan.yaml`` that ``medxfer run`` takes like any
config. docs/plan.md states every rule and the evidence for it.
"""

from medxfer.planning.plan import Plan
from medxfer.planning.planner import make_plan, parse_budget

__all__ = ["Plan", "make_plan", "parse_budget"]
