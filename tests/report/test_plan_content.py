"""The planned run's report notes: what the plan estimated and what the time limit did."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from medxfer.report.plan_content import add_plan_section

PLAN = {"budget_seconds": 900, "device": "cpu", "machine": "2 CPU cores",
        "estimate": {"epochs": 8, "seconds_per_epoch": 50.0, "members": 1,
                     "training_seconds": 400},
        "reasons": [{"key": "train.epochs", "value": 8, "reason": "about 500 steps"}]}


@pytest.mark.parametrize("run, words", [(5, "lowered the epochs from 8 to 5: they ran slower"),
                                        (12, "raised the epochs from 8 to 12: they ran faster")])
def test_the_notes_say_whether_the_time_limit_lowered_or_raised_the_epochs(run, words):
    content = SimpleNamespace()
    add_plan_section(content, {"plan": PLAN, "train_seconds": 410.0, "time_limit": {
        "seconds": 790, "epochs_configured": 8, "epochs": run}})
    assert content.plan_rows == [["train.epochs", "8", "about 500 steps"]]
    assert any(words in note for note in content.plan_notes)
    assert any("training took 410 s" in note for note in content.plan_notes)


def test_a_run_without_a_plan_gets_no_plan_section():
    content = SimpleNamespace()
    add_plan_section(content, {"train_seconds": 1.0})
    assert not hasattr(content, "plan_rows")
