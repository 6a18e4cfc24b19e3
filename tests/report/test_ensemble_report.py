"""ensemble.md: one row per member and one for the ensemble, the task's columns."""

from __future__ import annotations

from medxfer.report.ensemble import render_ensemble_markdown


def summary(task: str, test: dict) -> dict:
    member = {"backbone": "basic_cnn", "strategy": "scratch", "test": test, "threshold": 0.4}
    return {"task": task, "class_names": ["a", "b"], "splits": {"val": 3, "test": 4},
            "combiner": {"name": "mean", "options": {}}, "threshold_source": "val_youden",
            "members": [{**member, "label": "m0", "seed": 0},
                        {**member, "label": "m1", "seed": 1}],
            "ensemble": {"label": "ensemble (mean)", "test": test, "threshold": 0.5}}


def test_classification_columns_and_threshold():
    test = {"accuracy": 0.8, "balanced_accuracy": 0.75, "precision": 0.7, "auc": 0.9,
            "f1": 0.78, "ece": 0.06, "n": 4}
    md = render_ensemble_markdown(summary("classification", test))
    assert ("| model | backbone | strategy | seed | Accuracy | Balanced accuracy | AUC | F1 "
            "| ECE | threshold |") in md
    assert "| m0 | basic_cnn | scratch | 0 | 0.800 | 0.750 | 0.900 | 0.780 | 0.060 | 0.400 |" in md
    assert "| **ensemble (mean)** |  |  |  | 0.800 |" in md and "precision" not in md.lower()


def test_segmentation_columns():
    test = {"dice": 0.8, "dice_liver": 0.8, "iou": 0.7, "hd95": 3.5, "fraction_mae": 0.01}
    md = render_ensemble_markdown(summary("segmentation", test))
    assert "| model | backbone | strategy | seed | Dice | IoU | HD95 |" in md
    assert "| m1 | basic_cnn | scratch | 1 | 0.800 | 0.700 | 3.500 |" in md
    assert "threshold" not in md
