"""medxfer plan and medxfer run DATA from the command line."""

from __future__ import annotations

import json

import pytest

from medxfer.cli import main


def test_plan_prints_a_commented_config_and_writes_it_once(repo_root, tmp_path, capsys):
    data = repo_root / "sample_data" / "classification"
    assert main(["plan", str(data), "--budget", "10m"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("# medxfer plan") and "task: classification" in out.out
    assert "estimate:" in out.err
    target = tmp_path / "plan.yaml"
    assert main(["plan", str(data), "--budget", "10m", "--output", str(target)]) == 0
    assert target.is_file()
    assert main(["plan", str(data), "--output", str(target)]) == 2
    assert "never overwritten" in capsys.readouterr().err


def test_plan_refuses_a_bad_budget_and_a_missing_dataset(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nothing"), "--budget", "10m"]) == 2
    assert main(["plan", str(tmp_path), "--budget", "soon"]) == 2
    assert "--budget 'soon'" in capsys.readouterr().err


@pytest.mark.slow
def test_budget_with_a_config_is_refused_not_ignored(repo_root, tmp_path, capsys):
    config = repo_root / "configs" / "breastmnist.yaml"
    for args in (["run", str(config)], ["run"]):
        assert main([*args, "--budget", "5m", "--output", str(tmp_path / "r")]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "--budget plans a run for a dataset" in err and "train.time_limit" in err
    assert not (tmp_path / "r").exists()


def test_run_data_plans_and_runs_within_its_budget(repo_root, tmp_path, capsys):
    import time

    data = repo_root / "sample_data" / "classification"
    out_dir = tmp_path / "run"
    tic = time.perf_counter()
    assert main(["run", str(data), "--budget", "3m", "--output", str(out_dir),
                 "--set", "eval.bootstrap=100"]) == 0
    took = time.perf_counter() - tic
    assert took <= 180 * 1.15, took
    plan = json.loads((out_dir / "plan.json").read_text())
    assert (out_dir / "plan.yaml").read_text().startswith("# medxfer plan")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["plan"]["budget_seconds"] == 180
    assert any(r["key"] == "eval.bootstrap" and "--set" in r["reason"]
               for r in plan["reasons"])
    assert "## Plan" in (out_dir / "report.md").read_text()


def test_search_is_refused_with_a_config_or_fewer_than_two_candidates(repo_root, tmp_path,
                                                                      capsys):
    config = repo_root / "configs" / "breastmnist.yaml"
    assert main(["run", str(config), "--search", "4", "--output", str(tmp_path / "r")]) == 2
    assert "--search compares candidate plans for a dataset" in capsys.readouterr().err
    data = repo_root / "sample_data" / "classification"
    assert main(["run", str(data), "--search", "1", "--output", str(tmp_path / "r")]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_run_data_with_a_search_runs_the_winner_within_its_budget(repo_root, tmp_path,
                                                                  capsys):
    import time

    data = repo_root / "sample_data" / "classification"
    out_dir = tmp_path / "run"
    tic = time.perf_counter()
    assert main(["run", str(data), "--budget", "3m", "--search", "3", "--output",
                 str(out_dir), "--set", "eval.bootstrap=100"]) == 0
    took = time.perf_counter() - tic
    assert took <= 180 * 1.15, took
    assert "search round 1/2" in capsys.readouterr().err
    plan = json.loads((out_dir / "plan.json").read_text())
    search = plan["search"]
    assert search["winner"] in [c["label"] for c in search["candidates"]]
    assert len(search["candidates"]) == 3
    assert all(c["rounds"] for c in search["candidates"])
    assert (out_dir / "metrics.json").is_file()
    assert f"# search: {search['winner']} won" in (out_dir / "plan.yaml").read_text()
    assert not list(tmp_path.glob(".run.search-*"))  # the candidates' runs are removed
    # a used folder is refused before any search
    assert main(["run", str(data), "--budget", "3m", "--search", "3", "--output",
                 str(out_dir)]) == 2
