"""The domain-adaptation study table, the report section and the PCA figure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medxfer.report import build_report_content, write_report
from medxfer.report.domain_figures import domain_gap, pca_2d, plot_feature_pca
from medxfer.report.domain_table import gap_closed, study_markdown, study_rows


def test_gap_closed():
    assert gap_closed(0.8, 0.6, 1.0) == pytest.approx(0.5)
    assert gap_closed(0.5, 0.6, 1.0) == pytest.approx(-0.25)
    assert math.isnan(gap_closed(0.8, 0.9, 0.9))


def test_study_rows_and_markdown():
    def run(source, target):
        return {"test": {"accuracy": source}, "target_test": {"accuracy": target, "auc": target}}

    rows = study_rows({"source_only": [run(0.9, 0.5), run(0.9, 0.7)],
                       "adabn": [run(0.9, 0.8), run(0.9, 0.8)],
                       "target_supervised": [run(0.9, 0.9), run(0.9, 0.9)]})
    adabn = next(r for r in rows if r["condition"] == "adabn")
    assert adabn["gap_closed_accuracy"] == pytest.approx(2 / 3)
    text = study_markdown(rows)
    assert "| adabn | 2 | 0.800 ± 0.000 | 67% |" in text


def test_pca_and_figure(tmp_path):
    rng = np.random.default_rng(0)
    source, target = rng.normal(0, 1, (30, 5)), rng.normal(3, 1, (20, 5))
    a, b = pca_2d(source, target)
    assert a.shape == (30, 2) and b.shape == (20, 2)
    assert domain_gap(source, target) > domain_gap(source, rng.normal(0, 1, (20, 5)))
    path = plot_feature_pca({"before": (source, target), "after": (source, source)},
                            tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_report_shows_source_and_target_side_by_side(tmp_path):
    summary = {"task": "classification", "test": {"accuracy": 0.9, "auc": 0.95},
               "target_test": {"accuracy": 0.7, "auc": 0.8},
               "domain_adaptation": {"name": "dsbn"}, "target_source": "shifted.npz"}
    md, html = write_report(tmp_path, summary)
    text = md.read_text(encoding="utf-8")
    assert "## Source and target domains" in text
    assert "| Accuracy | 0.9" in text and "-0.2" in text and "dsbn" in text
    assert "Source and target domains" in html.read_text(encoding="utf-8")


def test_segmentation_domain_rows_are_the_foreground_means():
    """Per-class keys and the fraction errors stay out; each per-class metric's row is its
    mean over the foreground classes."""
    test = {"dice": 0.8, "dice_liver": 0.9, "iou": 0.7, "iou_liver": 0.8, "hd95": 4.0,
            "hd95_liver": 3.0, "fraction_mae": 0.01, "fraction_mse": 0.001, "n": 5}
    summary = {"task": "segmentation", "class_names": ["background", "liver"], "test": test,
               "target_test": {**test, "dice": 0.6, "n": 4}}
    content = build_report_content(summary)
    assert [row[0] for row in content.domain_rows] == [
        "Dice (mean foreground)", "IoU (mean foreground)", "HD95 (mean foreground)",
        "Cases (n)"]
    assert content.domain_rows[0][1:] == ["0.800", "0.600", "-0.200"]
