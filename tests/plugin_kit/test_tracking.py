"""What loggers record: one naming for epochs, results and the config."""

from __future__ import annotations

import math

import numpy as np

import medxfer
from medxfer.config import RunConfig


def test_epoch_scalars_are_finite_numbers_by_tag_without_the_epoch():
    metrics = {"epoch": 3, "train_loss": 0.5, "train_L_new": 0.4, "val_auc": 0.9,
               "val_balanced_accuracy": np.float32(0.75), "val_recall": math.nan, "lr": 1e-3,
               "seconds": 12.0, "plugin_metric": 2, "note": "text", "flag": True}
    assert medxfer.epoch_scalars(metrics, "classification") == {
        "train/loss": 0.5, "train/L_new": 0.4, "val/auc": 0.9, "val/balanced_accuracy": 0.75,
        "lr": 1e-3, "seconds": 12.0, "plugin/metric": 2.0}
    assert medxfer.metric_tag("val_dice", "segmentation") == "val/dice"


def test_summary_metrics_of_a_classifier_hold_test_val_and_per_class_recall():
    summary = {"task": "classification", "val": {"auc": 0.91, "n": 50, "ece": None},
               "test": {"auc": 0.88, "accuracy": 0.8, "specificity": math.nan, "n": 100},
               "class_names": ["normal", "pneumonia / viral"],
               "confusion_matrix": [[30, 10], [5, 55]], "best_epoch": 4,
               "ci95": {"auc": [0.8, 0.9]}}
    assert medxfer.summary_metrics(summary) == {
        "final_val/auc": 0.91, "final_val/n": 50.0, "test/auc": 0.88, "test/accuracy": 0.8,
        "test/n": 100.0, "test/recall_normal": 0.75, "test/recall_pneumonia_viral": 55 / 60}


def test_summary_metrics_of_a_segmentation_hold_the_dice_of_each_class():
    summary = {"val": {"dice": 0.8}, "test": {"dice": 0.78, "dice_anterior": 0.8,
                                              "dice_posterior": 0.76, "hd95": 2.5},
               "target_test": {"dice": 0.6}}
    found = medxfer.summary_metrics(summary)
    assert found["test/dice_anterior"] == 0.8 and found["test/dice_posterior"] == 0.76
    assert found["target_test/dice"] == 0.6 and "test/recall_anterior" not in found


def test_hyperparameters_are_the_resolved_config_by_dotted_key():
    config = RunConfig.model_validate({
        "model": {"backbone": {"name": "resnet18", "pretrained": "imagenet"}},
        "strategy": {"name": "l2sp", "alpha": 0.01},
        "tracking": [{"name": "mlflow", "tracking_uri": "http://secret:5000"}]})
    params = medxfer.hyperparameters(config)
    assert params["model.backbone.name"] == "resnet18"
    assert params["strategy.alpha"] == 0.01
    assert params["train.optimizer.lr"] == 1e-3
    assert params["data.path"] == "none"  # None as text
    assert params["data.preprocess.ct_window"] == "[-1000.0, 400.0]"  # lists as JSON
    assert not any(key.startswith("tracking") for key in params)
    assert all(isinstance(v, (str, int, float, bool)) for v in params.values())
