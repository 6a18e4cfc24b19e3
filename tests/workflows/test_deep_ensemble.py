"""``ensemble.members > 1``: one run trains its members apart and reports their average."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from medxfer.config import load_config
from medxfer.workflows.deep_ensemble import member_seed, member_state
from medxfer.workflows.run import run_pipeline
from medxfer.errors import CheckpointError, ConfigError

QUICK = ["train.epochs=1", "eval.bootstrap=20", "train.batch_size=8", "data.limit=16",
         "model.backbone.name=basic_cnn", "model.backbone.pretrained=none"]


def _predictions(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in rows[0] if c.startswith("prob_")] or ["prediction"]
    return [r["id"] for r in rows], np.array([[float(r[c]) for c in columns] for r in rows])


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("deep") / "run"
    config = load_config(None, [*QUICK, "ensemble.members=2", "train.seed=1"])
    return run, run_pipeline(config, run, progress=False)


@pytest.mark.slow
def test_members_are_ordinary_runs_with_their_own_seeds(ensemble_run):
    run, summary = ensemble_run
    assert summary["ensemble"]["seeds"] == [2, 3]  # train.seed * members + k
    for k, seed in enumerate((2, 3)):
        member = run / "members" / f"m{k}"
        config = yaml.safe_load((member / "config.yaml").read_text(encoding="utf-8"))
        assert config["train"]["seed"] == seed and config["ensemble"]["members"] == 1
        assert (member / "report.html").is_file() and (member / "checkpoints" / "last.pt").is_file()
        assert (member / "splits.csv").read_text() == (run / "splits.csv").read_text()
    top = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert top["ensemble"]["members"] == 2 and top["train"]["seed"] == 1
    members = summary["ensemble"]["member_runs"]
    assert [m["run"] for m in members] == ["members/m0", "members/m1"]
    assert summary["train_seconds"] == pytest.approx(sum(m["train_seconds"] for m in members))
    assert not (run / "checkpoints").exists()  # the members hold the training state


@pytest.mark.slow
def test_the_ensemble_scores_are_the_mean_of_the_members_probabilities(ensemble_run):
    run, summary = ensemble_run
    ids, probs = _predictions(run / "predictions.csv")
    member_probs = []
    for k in range(2):
        member_ids, p = _predictions(run / "members" / f"m{k}" / "predictions.csv")
        assert member_ids == ids
        member_probs.append(p)
    assert np.allclose(probs, np.mean(member_probs, axis=0), atol=2e-6)
    assert summary["test"]["n"] == len(ids)
    mean_auc = np.mean([m["test"]["auc"] for m in summary["ensemble"]["member_runs"]])
    assert summary["ensemble"]["member_mean"]["test"]["auc"] == pytest.approx(mean_auc)


@pytest.mark.slow
def test_the_run_loads_as_one_network_and_reports_its_members(ensemble_run):
    from medxfer.workflows.predict import load_run
    from medxfer.models import EnsembleNetwork

    run, _ = ensemble_run
    loaded = load_run(run)
    assert isinstance(loaded.model, EnsembleNetwork) and len(loaded.model.members) == 2
    sidecar = json.loads((run / "model.json").read_text(encoding="utf-8"))
    assert sidecar["ensemble"] == {"members": 2, "seeds": [2, 3]}
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "## Ensemble members" in report and "m1 (members/m1)" in report
    assert "| Seed | Kept epoch |" in report
    assert "2 networks trained apart (seeds 2, 3)" in report
    assert (run / "figures" / "training_curves.png").stat().st_size > 0
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "<h2>Ensemble members</h2>" in html


@pytest.mark.slow
def test_transfer_from_an_ensemble_run_names_its_members(ensemble_run, tmp_path):
    run, _ = ensemble_run
    config = load_config(None, [*QUICK[:-1], f"model.backbone.pretrained={run}"])
    with pytest.raises(CheckpointError, match="members"):
        run_pipeline(config, tmp_path / "run", progress=False)


@pytest.mark.slow
def test_resume_keeps_finished_members_and_trains_the_missing_one(ensemble_run, tmp_path):
    import shutil

    source, summary = ensemble_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    shutil.rmtree(run / "members" / "m1")  # killed before member 1 started
    for name in ("metrics.json", "report.md", "report.html", "model.safetensors",
                 "predictions.csv"):
        (run / name).unlink()
    kept = (run / "members" / "m0" / "metrics.json").stat().st_mtime_ns
    config = load_config(run / "config.yaml")
    resumed = run_pipeline(config, run, resume=True, progress=False)
    assert (run / "members" / "m0" / "metrics.json").stat().st_mtime_ns == kept
    assert resumed["ensemble"]["seeds"] == [2, 3]
    again = resumed["ensemble"]["member_runs"][1]["test"]
    assert again == summary["ensemble"]["member_runs"][1]["test"]  # same seed, same member
    assert resumed["test"] == summary["test"]


@pytest.mark.slow
def test_a_member_trained_on_other_cases_is_refused(ensemble_run, tmp_path):
    import shutil

    source, _ = ensemble_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    splits = run / "members" / "m1" / "splits.csv"
    lines = splits.read_text(encoding="utf-8").splitlines()
    case, split = lines[1].split(",")
    lines[1] = f"{case},{'val' if split != 'val' else 'test'}"
    splits.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = load_config(run / "config.yaml")
    with pytest.raises(ConfigError, match="members/m1.*splits.csv differs"):
        run_pipeline(config, run, resume=True, progress=False)


def test_member_state_tells_done_from_resumable_from_new(tmp_path):
    assert member_state(tmp_path / "absent") == "new"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    assert member_state(tmp_path) == "resume"
    for name in ("metrics.json", "report.html", "model.safetensors"):
        (tmp_path / name).write_text("{}")
    assert member_state(tmp_path) == "done"


def test_member_seeds_do_not_overlap_between_run_seeds():
    seeds = set()
    for seed in range(3):
        config = load_config(None, ["ensemble.members=5", f"train.seed={seed}"])
        seeds |= {member_seed(config, k) for k in range(5)}
    assert seeds == set(range(15))


@pytest.mark.slow
def test_regression_ensemble_averages_outputs(tmp_path, repo_root):
    images = sorted((repo_root / "sample_data" / "classification").rglob("*.png"))[:30]
    manifest = tmp_path / "targets.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        for i, path in enumerate(images):
            writer.writerow([str(path), f"{(i % 5) / 5:.3f}"])
    config = load_config(None, [*QUICK, "task=regression", f"data.path={manifest}",
                                "ensemble.members=2"])
    summary = run_pipeline(config, tmp_path / "run", progress=False)
    assert summary["ensemble"]["combine"] == "mean of the members' outputs"
    _, got = _predictions(tmp_path / "run" / "predictions.csv")
    members = [_predictions(tmp_path / "run" / "members" / f"m{k}" / "predictions.csv")[1]
               for k in range(2)]
    assert np.allclose(got, np.mean(members, axis=0), atol=1e-5)


@pytest.mark.parametrize("overrides, match", [
    (["task=segmentation"], "medxfer ensemble"),
    (["domain_adaptation.name=coral"], "domain_adaptation"),
    (["ensemble.members=0"], "ensemble.members"),
])
def test_unsupported_ensembles_are_refused_when_the_config_loads(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, ["ensemble.members=2", *overrides])


@pytest.mark.slow
def test_members_stop_when_the_next_would_not_fit_in_the_ensemble_time_limit(tmp_path):
    config = load_config(None, [*QUICK, "ensemble.members=3", "ensemble.time_limit=0.5"])
    run = tmp_path / "run"
    summary = run_pipeline(config, run, progress=False)
    # member 0 always trains; it took longer than the whole limit, so no other fits
    assert summary["ensemble"]["members"] == 1 and summary["ensemble"]["members_most"] == 3
    assert sorted(p.name for p in (run / "members").iterdir()) == ["m0"]
    member = yaml.safe_load((run / "members" / "m0" / "config.yaml").read_text())
    assert member["train"]["time_limit"] == 1.0  # the time left, at least a second
    assert "1 of up to 3 members were trained" in (run / "report.md").read_text()
    from medxfer.models import EnsembleNetwork
    from medxfer.workflows.predict import load_run

    loaded = load_run(run)  # an ensemble of one loads as the ensemble it was saved as
    assert isinstance(loaded.model, EnsembleNetwork) and len(loaded.model.members) == 1


@pytest.mark.slow
def test_a_generous_ensemble_time_limit_trains_every_member_and_resumes_one(tmp_path):
    config = load_config(None, [*QUICK, "ensemble.members=2", "ensemble.time_limit=100000"])
    run = tmp_path / "run"
    summary = run_pipeline(config, run, progress=False)
    assert summary["ensemble"]["members"] == 2
    limits = [yaml.safe_load((run / "members" / m / "config.yaml").read_text())["train"]
              ["time_limit"] for m in ("m0", "m1")]
    assert limits[0] == 100000 and limits[1] < 100000  # the second gets what is left
    # killed while member 1 trained: it continues with the limit it started with
    for name in ("metrics.json", "report.html"):
        (run / "members" / "m1" / name).unlink()
    (run / "metrics.json").unlink()
    resumed = run_pipeline(load_config(run / "config.yaml"), run, resume=True, progress=False)
    assert resumed["ensemble"]["members"] == 2


def test_an_ensemble_time_limit_needs_an_ensemble():
    with pytest.raises(ConfigError, match="ensemble.time_limit"):
        load_config(None, ["ensemble.time_limit=60"])
