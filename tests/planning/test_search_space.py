"""The candidate plans of --search: the plan first, one change each, valid configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from medxfer.config import validate_config
from medxfer.planning import make_plan
from medxfer.planning.search_space import Candidate, candidate_plans
from medxfer.plugins import build_registries
from tests.planning.test_planner import fixed_probe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registries():
    return build_registries()


@pytest.fixture(scope="module")
def plan(registries):
    data = REPO / "sample_data" / "classification"
    return make_plan(data, budget=900, registries=registries, probe=fixed_probe(0.01))


def test_the_plan_comes_first_and_every_candidate_changes_one_choice(plan, registries):
    found = candidate_plans(plan, registries, 20)
    assert found[0].label == "as planned" and found[0].changes == {}
    labels = [c.label for c in found]
    assert len(labels) == len(set(labels)) >= 5
    assert {"lr/3", "lr*3", "l2sp", "discriminative_lr"} <= set(labels)
    for candidate in found[1:]:
        assert len(candidate.changes) == 1, candidate
        validate_config(candidate.apply(plan.config), source="test")
    lr = plan.get("train.optimizer.lr")
    assert found[1].apply(plan.config)["train"]["optimizer"]["lr"] == pytest.approx(lr / 3)
    assert plan.get("train.optimizer.lr") == lr  # apply copies


def test_count_and_the_keys_the_user_set_bound_the_candidates(plan, registries):
    assert len(candidate_plans(plan, registries, 3)) == 3
    kept = candidate_plans(plan, registries, 20, fixed=["train.optimizer.lr", "strategy"])
    assert all(not any(k.startswith(("train.optimizer.lr", "strategy")) for k in c.changes)
               for c in kept)


def test_a_candidate_applies_nested_keys_to_a_copy():
    config = {"train": {"optimizer": {"lr": 0.1}}}
    changed = Candidate("x", "why", {"train.optimizer.lr": 0.2, "model.head.dropout": 0.5}) \
        .apply(config)
    assert changed == {"train": {"optimizer": {"lr": 0.2}}, "model": {"head": {"dropout": 0.5}}}
    assert config == {"train": {"optimizer": {"lr": 0.1}}}
