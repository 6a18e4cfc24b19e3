"""scripts/threshold_study.py: threshold rules scored on validation alone."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location(
        "threshold_study", REPO / "scripts" / "threshold_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_halves_score_every_rule_on_the_held_out_half(study):
    rng = np.random.default_rng(0)
    y = np.array([0] * 60 + [1] * 140)
    p = np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.2, y.size), 0, 1)
    result = study.split_half(y, p, repeats=20, seed=0)
    assert set(result) == set(study.RULES)
    for rule, row in result.items():
        assert 0.5 < row["acc"] <= 1 and 0.5 < row["bacc"] <= 1, rule
    assert result["fixed_0.5"]["t_sd"] == 0.0
    # the one-standard-error rule moves its threshold less than the most accurate one
    assert result["val_accuracy_1se"]["t_sd"] <= result["val_accuracy"]["t_sd"]


def test_scores_are_accuracy_and_balanced_accuracy(study):
    y = np.array([0, 0, 0, 1])
    p = np.array([0.1, 0.2, 0.6, 0.9])
    assert study.scores(y, p, 0.5) == pytest.approx((0.75, (1.0 + 2 / 3) / 2))


@pytest.mark.slow
def test_a_finished_run_is_scored_on_validation_and_test_only_when_asked(study, tmp_path):
    from medxfer.config import load_config
    from medxfer.workflows.run import run_pipeline

    config = load_config(None, ["data.limit=40", "data.split.test_fraction=0.2",
                                "train.epochs=1", "model.backbone.name=basic_cnn",
                                "model.backbone.pretrained=none", "eval.bootstrap=0",
                                "train.batch_size=8"])
    run = tmp_path / "run"
    run_pipeline(config, run, progress=False)
    out = tmp_path / "val.json"
    assert study.main([str(run), "--repeats", "2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["rule"] for r in rows] == list(study.RULES)
    assert all("test_acc" not in r and r["val_n"] > 0 for r in rows)
    assert study.main([str(run), "--repeats", "2", "--test", "--json", str(out)]) == 0
    assert all(0 <= r["test_acc"] <= 1 for r in json.loads(out.read_text()))
