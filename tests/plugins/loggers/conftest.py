"""What the logger tests share: a fit context as the trainer gives it, and a local MLflow
store for loggers that read MLflow's environment."""

from __future__ import annotations

import pytest
import torch

from medxfer.config import RunConfig
from medxfer.training.context import FitContext


@pytest.fixture
def fit_context(tmp_path):
    """A fit context of a short classification run in ``tmp_path / "run"``."""
    def make(**config) -> FitContext:
        run_dir = tmp_path / "run"
        run_dir.mkdir(exist_ok=True)
        return FitContext(config=RunConfig.model_validate(config), model=None,
                          device=torch.device("cpu"), max_epochs=2, run_dir=run_dir)

    return make


@pytest.fixture(autouse=True)
def local_mlflow_store(tmp_path, monkeypatch):
    """MLflow's default store is a folder of this test (MLflow refuses file stores unless
    asked to allow them)."""
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def epoch_metrics(epoch: int) -> dict:
    """An epoch's metrics as the trainer stores them, with one a plugin added."""
    return {"train_loss": 1.0 / epoch, "train_L_new": 1.0 / epoch, "val_loss": 1.2 / epoch,
            "val_auc": 0.6 + 0.1 * epoch, "val_accuracy": 0.5 + 0.1 * epoch, "epoch": epoch,
            "lr": 1e-3 / epoch, "seconds": 2.0 * epoch, "plugin_metric": 7.0 + epoch}


def classification_summary() -> dict:
    """A classification run's summary as ``metrics.json`` holds it."""
    return {"task": "classification", "val": {"auc": 0.8, "loss": 0.5, "n": 20},
            "test": {"auc": 0.75, "accuracy": 0.7, "n": 30},
            "class_names": ["normal", "pneumonia"], "confusion_matrix": [[10, 5], [4, 11]],
            "ci95": {"auc": [0.6, 0.9]}, "best_epoch": 2, "epochs_run": 2, "monitor": "val_auc",
            "history": [epoch_metrics(1), epoch_metrics(2)], "figures": []}
