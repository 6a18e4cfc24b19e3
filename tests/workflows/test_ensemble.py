"""run_ensemble and `medxfer ensemble` on tiny finished runs of the embedded sample data.

Three classification runs (basic_cnn, one epoch, seeds 0-2, ~2 s each) and two
segmentation runs (a tiny test network) are trained once per module. Validation and test
sets have different sizes (20 and 16 cases) so that what a combiner is fitted on can be
told apart from what it combines.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

import medxfer
from medxfer.cli import main
from medxfer.config import load_config
from medxfer.workflows.ensemble import run_ensemble
from medxfer.workflows.run import run_pipeline
from medxfer.errors import CheckpointError, ConfigError

QUICK = ["data.limit=20", "data.split.test_fraction=0.1", "train.epochs=1",
         "model.backbone.name=basic_cnn", "model.backbone.pretrained=none", "eval.bootstrap=0",
         "train.batch_size=8"]
N_VAL, N_TEST = 20, 16

# every test here uses the module's trained runs (`runs`, `seg_runs`)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("members")
    dirs = []
    for seed in (0, 1, 2):
        config = load_config(None, [*QUICK, f"train.seed={seed}"])
        run_pipeline(config, root / f"seed{seed}", progress=False)
        dirs.append(root / f"seed{seed}")
    return dirs


@pytest.fixture(scope="module")
def mean_ensemble(runs, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ensembles") / "mean"
    return out, run_ensemble(runs, "mean", out)


def test_ensemble_writes_every_output(mean_ensemble):
    out, summary = mean_ensemble
    for name in ("ensemble.json", "ensemble.md", "predictions.csv",
                 "figures/reliability_diagram.png", "figures/roc_curve.png",
                 "figures/confusion_matrix.png"):
        assert (out / name).is_file(), name
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]
    saved = json.loads((out / "ensemble.json").read_text(encoding="utf-8"))
    assert saved["task"] == "classification"
    assert saved["splits"] == {"val": N_VAL, "test": N_TEST}
    assert saved["combiner"]["name"] == "mean"
    assert [m["seed"] for m in saved["members"]] == [0, 1, 2]
    for row in [*saved["members"], saved["ensemble"]]:
        for key in ("accuracy", "auc", "f1", "ece"):
            assert key in row["test"]
        assert 0.0 <= row["test"]["ece"] <= 1.0
        assert row["test"]["n"] == N_TEST
    with (out / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == N_TEST
    assert list(rows[0])[:3] == ["id", "label", "prediction"]
    report = (out / "ensemble.md").read_text(encoding="utf-8")
    assert "| **ensemble (mean)** |" in report and "ECE" in report
    for member in ("seed0", "seed1", "seed2"):
        assert f"| {member} |" in report


def test_members_score_as_in_their_own_runs(runs, mean_ensemble):
    _, summary = mean_ensemble
    for run, row in zip(runs, summary["members"]):
        own = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        assert row["threshold"] == pytest.approx(own["threshold"])
        for key in ("accuracy", "auc", "f1"):
            assert row["test"][key] == pytest.approx(own["test"][key], abs=1e-6), key


def test_mean_ensemble_is_the_mean_of_member_probabilities(runs, mean_ensemble, tmp_path):
    out, _ = mean_ensemble
    single = [run_ensemble([run, runs[(i + 1) % 3]], "mean", tmp_path / f"pair{i}",
                           combiner_options={"weights": [1, 0]})
              for i, run in enumerate(runs)]
    # weights [1, 0] reproduce member i alone: its test metrics, not the other's.
    for i, summary in enumerate(single):
        assert summary["ensemble"]["test"]["auc"] == pytest.approx(
            summary["members"][0]["test"]["auc"])
    probs = {}
    for i in range(3):
        with (tmp_path / f"pair{i}" / "predictions.csv").open(encoding="utf-8") as handle:
            probs[i] = {r["id"]: float(r["prob_lesion"]) for r in csv.DictReader(handle)}
    with (out / "predictions.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            mean = sum(probs[i][row["id"]] for i in range(3)) / 3
            assert float(row["prob_lesion"]) == pytest.approx(mean, abs=1e-5)


def test_stacking_is_fitted_on_validation_outputs_only(runs, tmp_path, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    fitted_on, applied_to = [], []
    fit, predict_proba = LogisticRegression.fit, LogisticRegression.predict_proba

    def spy_fit(self, X, y, *args, **kwargs):
        fitted_on.append(X.shape)
        return fit(self, X, y, *args, **kwargs)

    def spy_predict(self, X):
        applied_to.append(len(X))
        return predict_proba(self, X)

    monkeypatch.setattr(LogisticRegression, "fit", spy_fit)
    monkeypatch.setattr(LogisticRegression, "predict_proba", spy_predict)
    summary = run_ensemble(runs, "stacking", tmp_path / "stacked")
    assert fitted_on == [(N_VAL, 3 * 2)]  # validation cases x (members x classes)
    assert sorted(applied_to) == [N_TEST, N_VAL]  # test, and validation for the threshold
    assert summary["combiner"]["fit_cases"] == N_VAL
    assert 0.0 <= summary["ensemble"]["test"]["ece"] <= 1.0


def test_weighted_uses_the_members_validation_auc(runs, tmp_path):
    summary = run_ensemble(runs, "weighted", tmp_path / "weighted")
    scores = [m["val"]["auc"] for m in summary["members"]]
    assert summary["member_scores"]["values"] == pytest.approx(scores)
    assert summary["combiner"]["weights_used"] == pytest.approx([s / sum(scores) for s in scores])


def test_a_plain_callable_combiner_from_a_plugin_works(runs, tmp_path):
    """The minimal plugin of docs/plugin_hooks.md: a factory returning
    ``combine(outputs, weights=None)``."""

    def geometric_mean(outputs, weights=None):
        w = torch.ones(len(outputs)) if weights is None else torch.as_tensor(weights)
        w = (w / w.sum()).to(outputs).view(-1, *[1] * (outputs.ndim - 1))
        pooled = torch.exp((w * outputs.clamp_min(1e-12).log()).sum(dim=0))
        return pooled / pooled.sum(dim=1, keepdim=True)

    class GeometricMeanPlugin:
        @medxfer.hookimpl
        def medxfer_register_combiners(self, register):
            register("geometric_mean", lambda: geometric_mean)

    manager = medxfer.create_plugin_manager()
    manager.register(GeometricMeanPlugin(), name="tests:geometric_mean")
    summary = run_ensemble(runs, "geometric_mean", tmp_path / "geo",
                           registries=medxfer.build_registries(manager))
    assert summary["combiner"] == {"name": "geometric_mean", "options": {}}
    assert 0.0 <= summary["ensemble"]["test"]["ece"] <= 1.0
    with (tmp_path / "geo" / "predictions.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            total = float(row["prob_normal"]) + float(row["prob_lesion"])
            assert total == pytest.approx(1.0, abs=1e-5)


def _copy_run(run: Path, target: Path) -> Path:
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("tensorboard", "checkpoints"))
    return target


def test_a_member_with_other_classes_is_refused(runs, tmp_path):
    other = _copy_run(runs[2], tmp_path / "renamed")
    sidecar = json.loads((other / "model.json").read_text(encoding="utf-8"))
    sidecar["class_names"] = ["healthy", "lesion"]
    (other / "model.json").write_text(json.dumps(sidecar), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"differ in classes.*same order") as info:
        run_ensemble([runs[0], runs[1], other], "mean", tmp_path / "out")
    assert str(runs[0]) in str(info.value) and str(other) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_member_with_another_test_set_is_refused(runs, tmp_path):
    other = _copy_run(runs[1], tmp_path / "moved")
    lines = (other / "splits.csv").read_text(encoding="utf-8").splitlines()
    moved = next(i for i, line in enumerate(lines) if line.endswith(",test"))
    case = lines[moved].split(",")[0]
    lines[moved] = f"{case},train"
    (other / "splits.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"different test sets.*'{case}'.*same cases"):
        run_ensemble([runs[0], other], "mean", tmp_path / "out")


def test_a_run_that_did_not_finish_is_refused(runs, tmp_path):
    """A killed or diverged run keeps its best model so far, but has no test evaluation."""
    unfinished = _copy_run(runs[1], tmp_path / "killed")
    (unfinished / "metrics.json").unlink()
    with pytest.raises(CheckpointError, match=r"'.*killed' is not a finished run \(no "
                                              r"metrics.json"):
        run_ensemble([runs[0], unfinished], "mean", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_user_errors_are_refused_before_any_work(runs, tmp_path):
    with pytest.raises(ConfigError, match="at least two"):
        run_ensemble(runs[:1], "mean", tmp_path / "one")
    with pytest.raises(ConfigError, match="given twice"):
        run_ensemble([runs[0], runs[0]], "mean", tmp_path / "twice")
    with pytest.raises(ConfigError, match="Did you mean 'mean'"):
        run_ensemble(runs, "meen", tmp_path / "typo")
    with pytest.raises(ConfigError, match="one per run"):
        run_ensemble(runs, "mean", tmp_path / "w", combiner_options={"weights": [1, 2]})
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("results", encoding="utf-8")
    with pytest.raises(ConfigError, match="never overwritten"):
        run_ensemble(runs, "mean", used)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def test_cli_ensemble_prints_the_table_and_writes_the_folder(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["ensemble", "--runs", *map(str, runs), "--combiner", "vote",  # --runs A B C
            "--option", "output=onehot", "--output", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "ensemble (vote)" in printed and "ece" in printed
    saved = json.loads((out / "ensemble.json").read_text(encoding="utf-8"))
    assert saved["combiner"]["options"] == {"output": "onehot"}
    assert main(args) == 2  # the folder now holds results
    assert "never overwritten" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["--combiner", "stackng"], "Did you mean 'stacking'"),
    (["--option", "wieghts=[1,0,0]"], "Did you mean 'weights'"),
    (["--option", "weights"], "KEY=VALUE"),
])
def test_cli_user_errors_exit_2_with_one_line(runs, tmp_path, capsys, extra, message):
    args = ["ensemble", *[a for r in runs for a in ("--runs", str(r))], *extra,
            "--output", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# segmentation
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seg_runs(tmp_path_factory, repo_root_module) -> tuple[list[Path], object]:
    from tests.workflows.test_run_segmentation import _TinyPlugin

    manager = medxfer.create_plugin_manager()
    manager.register(_TinyPlugin(), name="tests:tiny_seg")
    registries = medxfer.build_registries(manager)
    root = tmp_path_factory.mktemp("seg_members")
    path = repo_root_module / "sample_data" / "segmentation_2d"
    dirs = []
    for seed in (0, 1):
        config = load_config(None, ["task=segmentation", f"data.path={path}", "data.limit=6",
                                    "train.epochs=1", "eval.bootstrap=0", "train.batch_size=4",
                                    "model.backbone.name=tiny_seg",
                                    "strategy.name=full_finetune", f"train.seed={seed}"])
        run_pipeline(config, root / f"seg{seed}", registries=registries, progress=False)
        dirs.append(root / f"seg{seed}")
    return dirs, registries


@pytest.fixture(scope="module")
def repo_root_module() -> Path:
    return Path(__file__).resolve().parents[2]


def test_segmentation_ensemble_combines_probability_maps(seg_runs, tmp_path):
    dirs, registries = seg_runs
    summary = run_ensemble(dirs, "vote", tmp_path / "seg", registries=registries)
    assert summary["task"] == "segmentation"
    for row in [*summary["members"], summary["ensemble"]]:
        assert 0.0 <= row["test"]["dice"] <= 1.0
        assert row["test"]["n"] == summary["splits"]["test"]
    for name in ("ensemble.json", "ensemble.md", "per_case.csv", "figures/dice_per_class.png"):
        assert (tmp_path / "seg" / name).is_file(), name
    header = (tmp_path / "seg" / "per_case.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "id,ensemble_dice,seg0_dice,seg1_dice"
    assert "| Dice | IoU | HD95 |" in (tmp_path / "seg" / "ensemble.md").read_text(encoding="utf-8")


def test_stacking_is_refused_for_segmentation(seg_runs, tmp_path):
    dirs, registries = seg_runs
    with pytest.raises(ConfigError, match="classification outputs only"):
        run_ensemble(dirs, "stacking", tmp_path / "seg", registries=registries)
    assert not (tmp_path / "seg").exists()


def test_segmentation_and_classification_runs_are_not_mixed(runs, seg_runs, tmp_path):
    dirs, registries = seg_runs
    with pytest.raises(ConfigError, match="differ in task"):
        run_ensemble([runs[0], dirs[0]], "mean", tmp_path / "mixed", registries=registries)
