"""Successive halving over candidate plans (--search), with an injected trainer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from medxfer.errors import ConfigError
from medxfer.planning import make_plan
from medxfer.plugins import build_registries
from medxfer.workflows.plan_search import SEARCH_SHARE, search_plan
from tests.planning.test_planner import fixed_probe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registries():
    return build_registries()


def new_plan(registries, budget=900, step=0.01):
    return make_plan(REPO / "sample_data" / "classification", budget=budget,
                     registries=registries, probe=fixed_probe(step))


def scored_by_lr(best_lr):
    """A trainer whose validation score is best at ``best_lr``; it records its calls."""
    calls = []

    def fit(config, folder, *, registries):
        folder.mkdir(parents=True)
        (folder / "weights").write_text("x")
        lr = config.train.optimizer.lr
        calls.append((folder.name, lr, config.train.epochs, config.ensemble.members))
        score = -abs(math.log(lr / best_lr))
        return {"best_score": score, "best_value": score, "best_epoch": 1, "monitor": "val_auc",
                "epochs_run": config.train.epochs, "train_seconds": 0.1}

    fit.calls = calls
    return fit


def test_the_better_half_goes_on_with_twice_the_epochs_and_the_winner_is_planned(
        registries, tmp_path):
    plan = new_plan(registries)
    lr = plan.get("train.optimizer.lr")
    limit = plan.get("train.time_limit") * (plan.get("ensemble.members") or 1)
    fit = scored_by_lr(lr / 3)
    work = tmp_path / "search"
    record = search_plan(plan, 4, registries=registries, workdir=work, fit=fit,
                         progress=False)
    assert record["winner"] == "lr/3"
    rounds = [c[0].split("_")[0] for c in fit.calls]
    assert rounds.count("round1") == 4 and rounds.count("round2") == 2
    first, second = fit.calls[0][2], fit.calls[4][2]
    assert second == min(2 * first, plan.get("train.epochs") or second)
    assert all(members == 1 for *_, members in fit.calls)
    assert plan.get("train.optimizer.lr") == pytest.approx(lr / 3)
    assert "--search 4" in plan.reasons["train.optimizer.lr"]
    assert plan.summary["search"]["winner"] == "lr/3"
    assert plan.get("train.time_limit") <= limit
    assert not work.exists()  # the candidates' folders are removed


def test_the_plan_itself_can_win_and_is_kept(registries, tmp_path):
    plan = new_plan(registries)
    before = dict(plan.config["train"]["optimizer"])
    record = search_plan(plan, 3, registries=registries, workdir=tmp_path / "s",
                         fit=scored_by_lr(before["lr"]), progress=False)
    assert record["winner"] == "as planned"
    assert plan.config["train"]["optimizer"] == before
    assert "kept the plan" in plan.summary["search_note"]


def test_a_search_the_budget_cannot_hold_is_refused_with_what_to_give(registries, tmp_path):
    plan = new_plan(registries, budget=120, step=0.5)
    with pytest.raises(ConfigError, match=r"--search 8: .* give a --budget with about \d+ more"):
        search_plan(plan, 8, registries=registries, workdir=tmp_path / "s",
                    fit=scored_by_lr(1e-3), progress=False)
    with pytest.raises(ConfigError, match="at least 2"):
        search_plan(plan, 1, registries=registries, workdir=tmp_path / "s",
                    fit=scored_by_lr(1e-3), progress=False)


def test_the_search_uses_its_share_of_the_training_time(registries, tmp_path):
    plan = new_plan(registries)
    epoch = plan.summary["estimate"]["seconds_per_epoch"]
    training = plan.get("train.time_limit") * (plan.get("ensemble.members") or 1)
    fit = scored_by_lr(1e-3)
    search_plan(plan, 4, registries=registries, workdir=tmp_path / "s", fit=fit,
                progress=False)
    planned_cost = sum(epochs for _, _, epochs, _ in fit.calls) * epoch
    assert planned_cost <= SEARCH_SHARE * training + 1e-6


def test_a_candidate_that_diverges_drops_out_and_the_search_goes_on(registries, tmp_path):
    from medxfer.errors import TrainingError

    plan = new_plan(registries)
    lr = plan.get("train.optimizer.lr")
    scored = scored_by_lr(lr * 3)

    def fit(config, folder, *, registries):
        if config.train.optimizer.lr > lr * 2:
            raise TrainingError("training diverged in epoch 1")
        return scored(config, folder, registries=registries)

    record = search_plan(plan, 3, registries=registries, workdir=tmp_path / "s", fit=fit,
                         progress=False)
    assert record["winner"] != "lr*3"
    dropped = next(c for c in record["candidates"] if c["label"] == "lr*3")
    assert dropped["rounds"][0]["best_value"] == "diverged"


def test_work_folders_of_killed_searches_are_removed_and_live_ones_kept(tmp_path, capsys):
    import os
    import subprocess
    import sys

    from medxfer.workflows.plan_search import search_workdir

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = tmp_path / f".run.search-{ended.stdout.strip()}"
    (dead / "round1_0").mkdir(parents=True)
    live = tmp_path / f".run.search-{os.getppid()}"  # a process that is running
    live.mkdir()
    other = tmp_path / ".other.search-1"  # another run folder's search
    other.mkdir()
    workdir = search_workdir(tmp_path / "run")
    assert workdir == tmp_path / f".run.search-{os.getpid()}"
    assert not dead.exists() and live.is_dir() and other.is_dir()
    assert f"removed {dead}" in capsys.readouterr().err
