"""run_pipeline on small real and sample data: 3D, regression, scratch, L2-SP logging."""

from __future__ import annotations

import csv
import json

import pytest

from medxfer.config import load_config
from medxfer.workflows.run import run_pipeline
from medxfer.errors import ConfigError

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
