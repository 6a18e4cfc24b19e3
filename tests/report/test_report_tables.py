"""Value formatting, Markdown tables, prediction and metric files."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from medxfer.report import (
    format_ci,
    format_value,
    markdown_table,
    write_metrics_csv,
    write_metrics_json,
    write_predictions_csv,
)


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_format_value_and_ci():
    assert format_value(0.91234) == "0.912"
    assert format_value(624) == "624"
    assert format_value(np.int64(7)) == "7"
    assert format_value(1.0) == "1.000"
    for undefined in (None, math.nan, float("inf"), "x"):
        assert format_value(undefined) == "n/a"
    assert format_ci(0.912, [0.89, 0.931]) == "0.912 [0.890, 0.931]"
    assert format_ci(0.912, (math.nan, math.nan)) == "0.912"
    assert format_ci(0.912, None) == "0.912"
    assert format_ci(math.nan, [0.1, 0.2]) == "n/a"


def test_markdown_table_escapes_pipes():
    text = markdown_table(["Metric", "Value"], [["a|b", "1"]])
    lines = text.splitlines()
    assert lines[0] == "| Metric | Value |"
    assert lines[1] == "|:---|---:|"
    assert lines[2] == "| a\\|b | 1 |"


def test_classification_predictions_csv(tmp_path):
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    path = write_predictions_csv(tmp_path / "predictions.csv", ["a", "b", "c"],
                                 np.array([0, 1, 1]), probs, np.array([0, 1, 0]),
                                 ["normal", "pneumonia"])
    rows = read_csv(path)
    assert rows[0] == ["id", "label", "prediction", "prob_normal", "prob_pneumonia"]
    assert rows[2][:3] == ["b", "1", "1"]
    assert float(rows[2][4]) == pytest.approx(0.8)
    assert len(rows) == 4


def test_regression_and_unlabelled_predictions_csv(tmp_path):
    path = write_predictions_csv(tmp_path / "reg.csv", [1, 2], [3.5, math.nan], None, [3.0, 4.25])
    assert read_csv(path) == [["id", "target", "prediction"], ["1", "3.5", "3.0"],
                              ["2", "", "4.25"]]
    # regression predictions passed as 1-D "probs" (one value per case) are regression too
    path = write_predictions_csv(tmp_path / "reg1d.csv", ["a"], np.array([2.5]),
                                 np.array([2.25]), np.array([2.25]), [])
    assert read_csv(path) == [["id", "target", "prediction"], ["a", "2.5", "2.25"]]
    path = write_predictions_csv(tmp_path / "unlabelled.csv", ["x"], None,
                                 [[0.3, 0.7]], [1], ["a", "b"])
    assert read_csv(path)[1][:3] == ["x", "", "1"]


def test_predictions_csv_rejects_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError, match="ids"):
        write_predictions_csv(tmp_path / "p.csv", ["a", "b"], [0], [[0.5, 0.5]] * 2, [0, 1])
    with pytest.raises(ValueError, match="class names"):
        write_predictions_csv(tmp_path / "p.csv", ["a"], [0], [[0.5, 0.5]], [0], ["only"])


def test_metrics_csv_and_json(tmp_path):
    summary = {"task": "classification", "val": {"auc": 0.9, "n": 10},
               "test": {"auc": 0.8, "accuracy": math.nan, "n": 20},
               "ci95": {"auc": [0.7, 0.88]}}
    rows = read_csv(write_metrics_csv(tmp_path / "metrics.csv", summary))
    assert rows[0] == ["metric", "val", "test", "test_ci_low", "test_ci_high"]
    assert rows[1] == ["auc", "0.9", "0.8", "0.7", "0.88"]
    assert rows[2] == ["accuracy", "", "", "", ""]
    data = json.loads(write_metrics_json(tmp_path / "metrics.json", summary).read_text(encoding="utf-8"))
    assert data["test"]["accuracy"] is None and data["test"]["n"] == 20
