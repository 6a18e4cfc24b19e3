"""run_pipeline on small real and sample data: 3D, regression, scratch, L2-SP logging, and
what the run's loggers are told."""

from __future__ import annotations

import csv
import json

import pytest

import medxfer
from medxfer.config import load_config
from medxfer.workflows.run import run_pipeline
from medxfer.errors import ConfigError
from medxfer.plugins import build_registries, create_plugin_manager

QUICK = ["train.epochs=1", "eval.bootstrap=20", "train.batch_size=8"]


@pytest.mark.slow
def test_scratch_builds_without_pretrained_weights(tmp_path):
    config = load_config(None, [*QUICK, "strategy.name=scratch", "data.limit=16"])
    summary = run_pipeline(config, tmp_path / "run", progress=False)
    assert summary["pretrained"] == "none"
    assert summary["load_report"] is None
    assert summary["strategy"]["name"] == "scratch"


@pytest.mark.slow
def test_l2sp_logs_both_loss_terms(tmp_path):
    config = load_config(None, [*QUICK, "strategy.name=l2sp", "loss.alpha=0.01", "loss.beta=1",
                                "data.limit=16", "model.backbone.name=basic_cnn",
                                "model.backbone.pretrained=none"])
    summary = run_pipeline(config, tmp_path / "run", progress=False)
    epoch = summary["history"][0]
    assert "train_L_new" in epoch and "train_L_pre" in epoch and "train_l2sp" in epoch
    assert summary["loss"] == {"alpha": 0.01, "beta": 1.0}
    report = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "alpha = 0.01" in report


@pytest.mark.slow
def test_regression_end_to_end(tmp_path, repo_root):
    images = sorted((repo_root / "sample_data" / "classification").rglob("*.png"))[:40]
    manifest = tmp_path / "targets.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "patient_id"])
        for i, path in enumerate(images):
            writer.writerow([str(path), f"{(i % 7) / 7:.3f}", f"p{i // 2}"])
    config = load_config(None, [*QUICK, "task=regression", f"data.path={manifest}",
                                "model.backbone.name=basic_cnn"])
    summary = run_pipeline(config, tmp_path / "run", progress=False)
    assert summary["task"] == "regression"
    assert {"mae", "mse"} <= set(summary["test"])
    rows = (tmp_path / "run" / "predictions.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].split(",")[:3] == ["id", "target", "prediction"]


@pytest.mark.slow
def test_3d_classification_on_adrenalmnist3d(tmp_path, shared_data):
    path = shared_data / "medmnist" / "adrenalmnist3d.npz"
    config = load_config(None, [*QUICK, f"data.path={path}", "data.limit=24",
                                "model.backbone.name=resnet10_3d",
                                "model.backbone.pretrained=none"])
    summary = run_pipeline(config, tmp_path / "run", progress=False)
    sidecar = json.loads((tmp_path / "run" / "model.json").read_text(encoding="utf-8"))
    assert sidecar["spatial_dims"] == 3
    assert summary["splits"] == {"train": 24, "val": 24, "test": 24}


def test_2d_backbone_on_3d_data_is_a_config_error(tmp_path, shared_data):
    path = shared_data / "medmnist" / "adrenalmnist3d.npz"
    config = load_config(None, [*QUICK, f"data.path={path}", "data.limit=8",
                                "model.backbone.pretrained=none"])
    with pytest.raises(ConfigError, match="3D"):
        run_pipeline(config, tmp_path / "run", progress=False)


@pytest.mark.slow
def test_flip_tta_is_recorded_and_restored_with_the_run(tmp_path):
    from medxfer.workflows.predict import load_run

    config = load_config(None, [*QUICK, "data.limit=16", "model.backbone.name=basic_cnn",
                                "model.backbone.pretrained=none", "eval.tta=flip"])
    run_pipeline(config, tmp_path / "run", progress=False)
    sidecar = json.loads((tmp_path / "run" / "model.json").read_text(encoding="utf-8"))
    assert sidecar["tta_axes"] == [1]  # 2D: the left-right axis
    loaded = load_run(tmp_path / "run")
    assert loaded.model.tta_axes == [1]


def test_tta_refusals(tmp_path):
    from medxfer.workflows.run_setup import resolve_tta_axes

    assert resolve_tta_axes(load_config(None, ["eval.tta=flip"]), 3) == [0]
    assert resolve_tta_axes(load_config(None, ["eval.tta=flip", "eval.tta_axes=[0,1]"]), 2) \
        == [0, 1]
    assert resolve_tta_axes(load_config(None, []), 2) == []
    with pytest.raises(ConfigError, match="eval.tta_axes"):
        resolve_tta_axes(load_config(None, ["eval.tta=flip", "eval.tta_axes=[2]"]), 2)
    with pytest.raises(ConfigError, match="eval.tta_axes"):
        resolve_tta_axes(load_config(None, ["eval.tta=flip", "eval.tta_axes=[1,1]"]), 2)
    with pytest.raises(ConfigError, match="segmentation"):
        resolve_tta_axes(load_config(None, ["task=segmentation", "eval.tta=flip"]), 3)


def test_resume_with_another_config_names_the_keys_that_differ(tmp_path):
    from medxfer.config import config_to_yaml
    from medxfer.workflows.run_setup import resolve_run_config

    saved = load_config(None, ["train.epochs=3"])
    (tmp_path / "config.yaml").write_text(config_to_yaml(saved), encoding="utf-8")
    given = load_config(None, ["train.epochs=5", "train.seed=2"])
    with pytest.raises(ConfigError, match=r"differs from .* at train\.epochs \(3 in the run, "
                                          r"5 given\), train\.seed \(0 in the run, 2 given\); "):
        resolve_run_config(given, tmp_path, resume=True)
    assert resolve_run_config(saved, tmp_path, resume=True) == saved


class RecordingLogger:
    """A logger plugin that records the calls it gets."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    @medxfer.hookimpl
    def medxfer_log_metrics(self, ctx, epoch, metrics):
        self.calls.append(("metrics", epoch))

    @medxfer.hookimpl
    def medxfer_log_summary(self, ctx, summary):
        self.calls.append(("summary", summary["best_epoch"], "auc" in summary["test"]))

    @medxfer.hookimpl
    def medxfer_on_exception(self, ctx, exception):
        self.calls.append(("exception", str(exception)))


def recording_registries(calls: list):
    class Plugin:
        @medxfer.hookimpl
        def medxfer_register_loggers(self, register):
            register("recording", lambda: RecordingLogger(calls))

    manager = create_plugin_manager()
    manager.register(Plugin(), name="recording_plugin")
    return build_registries(manager)


TRACKED = [*QUICK, "train.epochs=2", "data.limit=16", "model.backbone.name=basic_cnn",
           "model.backbone.pretrained=none", "tracking=[{name: recording}]"]


@pytest.mark.slow
def test_loggers_get_every_epoch_then_the_summary(tmp_path):
    calls: list = []
    summary = run_pipeline(load_config(None, TRACKED), tmp_path / "run",
                           registries=recording_registries(calls), progress=False)
    assert calls == [("metrics", 1), ("metrics", 2), ("summary", summary["best_epoch"], True)]
    assert summary["best_epoch"] in (1, 2)  # counted from 1, as the history
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert not (tmp_path / "run" / "tensorboard").exists()  # tracking: only the recorder


@pytest.mark.slow
def test_loggers_are_told_when_the_final_evaluation_fails(tmp_path, monkeypatch):
    from medxfer.tasks.classification import ClassificationTask

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(ClassificationTask, "evaluate_and_report", broken)
    calls: list = []
    with pytest.raises(RuntimeError, match="evaluation failed"):
        run_pipeline(load_config(None, TRACKED), tmp_path / "run",
                     registries=recording_registries(calls), progress=False)
    assert calls == [("metrics", 1), ("metrics", 2), ("exception", "evaluation failed")]


def test_a_logger_that_cannot_be_built_stops_the_run_before_the_data_is_read(tmp_path,
                                                                            monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    config = load_config(None, [*QUICK, "data.path=/nonexistent/data.npz",
                                "tracking=[{name: mlflow}]"])
    with pytest.raises(ConfigError, match=r'needs MLflow.*pip install "medxfer\[mlflow\]"'):
        run_pipeline(config, tmp_path / "run", progress=False)
