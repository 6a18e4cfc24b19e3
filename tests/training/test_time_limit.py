"""train.time_limit: the epochs are lowered to what fits, the schedule follows, and the
summary says so."""

from __future__ import annotations

import json

import pytest

from medxfer.config import load_config
from medxfer.workflows.run import run_pipeline

TINY = ["model.backbone.name=basic_cnn", "model.backbone.channels=[4,8]",
        "model.backbone.pretrained=none", "data.augment.preset=none", "train.batch_size=8",
        "eval.bootstrap=0", "data.limit=40"]


@pytest.mark.slow
def test_a_time_limit_lowers_the_epochs_and_the_summary_says_so(tmp_path):
    config = load_config(None, [*TINY, "train.epochs=5", "train.time_limit=0.001"])
    summary = run_pipeline(config, tmp_path / "run", progress=False)
    assert summary["epochs_run"] == 1
    assert summary["time_limit"] == {"seconds": 0.001, "epochs_configured": 5, "epochs": 1}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["time_limit"]["epochs"] == 1


@pytest.mark.slow
def test_a_generous_time_limit_changes_nothing(tmp_path):
    config = load_config(None, [*TINY, "train.epochs=2", "train.time_limit=100000"])
    summary = run_pipeline(config, tmp_path / "run", progress=False)
    assert summary["epochs_run"] == 2 and "time_limit" not in summary


def test_the_time_limit_must_be_positive():
    from medxfer.errors import ConfigError

    with pytest.raises(ConfigError, match="train.time_limit"):
        load_config(None, ["train.time_limit=0"])


@pytest.mark.slow
def test_epochs_that_run_faster_than_planned_are_raised_up_to_max_epochs(tmp_path):
    config = load_config(None, [*TINY, "train.epochs=2", "train.time_limit=100000",
                                "train.max_epochs=4"])
    summary = run_pipeline(config, tmp_path / "run", progress=False)
    assert summary["epochs_run"] == 4
    assert summary["time_limit"] == {"seconds": 100000, "epochs_configured": 2, "epochs": 4}
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    # the schedule was stretched to the new end: the last epoch's rate is the lowest
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[-1]["lr"] < history[0]["lr"]


@pytest.mark.parametrize("keys, words", [
    (["train.max_epochs=10"], "give train.time_limit"),
    (["train.epochs=5", "train.time_limit=60", "train.max_epochs=3"], "below train.epochs"),
])
def test_max_epochs_needs_a_time_limit_and_at_least_the_epochs(keys, words):
    from medxfer.errors import ConfigError

    with pytest.raises(ConfigError, match=words):
        load_config(None, keys)
