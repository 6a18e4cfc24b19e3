"""Segmentation reports: per-class table, spacing line, figures and the per-case CSV."""

from __future__ import annotations

import csv
import math
from html.parser import HTMLParser

import numpy as np
import pytest

from medxfer.report import (
    build_report_content,
    plot_dice_boxplot,
    plot_segmentation_overlays,
    slice_view,
    write_per_case_csv,
    write_report,
)
from medxfer.report.seg_figures import ERROR_COLOURS, segmentation_overlays_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def summary():
    """Keys as medxfer.tasks.segmentation.evaluation writes them."""
    return {
        "task": "segmentation", "class_names": ["background", "liver", "left kidney"],
        "val": {"dice": 0.8, "dice_liver": 0.9, "dice_left_kidney": 0.7, "iou": 0.7,
                "iou_liver": 0.8, "iou_left_kidney": 0.6, "hd95": 4.0, "hd95_liver": 3.0,
                "hd95_left_kidney": 5.0, "fraction_mae": 0.01, "fraction_mse": 0.0002, "n": 3},
        "test": {"dice": 0.75, "dice_liver": 0.85, "dice_left_kidney": 0.65, "iou": 0.65,
                 "iou_liver": 0.75, "iou_left_kidney": 0.55, "hd95": 6.5, "hd95_liver": 4.5,
                 "hd95_left_kidney": 8.5, "fraction_mae": 0.02, "fraction_mse": None, "n": 5},
        "ci95": {"dice": [0.7, 0.8], "dice_liver": [0.8, 0.9], "hd95_left_kidney": [6.0, 11.0],
                 "fraction_mae": [0.01, 0.03]},
        "bootstrap": 200, "spacing": [1.5, 1.5, 3.0], "spacing_assumed": False,
        "per_case": "per_case.csv", "backbone": "unet", "strategy": {"name": "full_finetune"},
        "history": [{"epoch": 1, "val_dice": 0.5}], "best_epoch": 1, "monitor": "val_dice",
        "figures": ["figures/dice_per_class.png", "figures/segmentation_overlays.png",
                    "figures/training_curves.png"],
    }


def test_markdown_has_a_row_per_class(tmp_path, summary):
    md = write_report(tmp_path, summary)[0].read_text(encoding="utf-8")
    assert ("| Class | Dice val | Dice test, 95% CI | IoU val | IoU test, 95% CI | "
            "HD95 (mm) val | HD95 (mm) test, 95% CI |") in md
    assert "| liver | 0.900 | 0.850 [0.800, 0.900] | 0.800 | 0.750 | 3.000 | 4.500 |" in md
    assert "| left kidney | 0.700 | 0.650 |" in md and "8.500 [6.000, 11.000] |" in md
    assert "| Mean (foreground) | 0.800 | 0.750 [0.700, 0.800] |" in md
    assert "| Foreground fraction MAE | 0.010 | 0.020 [0.010, 0.030] |" in md
    assert "| Foreground fraction MSE | 0.000 | n/a |" in md
    assert md.index("Foreground fraction MSE") < md.index("| Cases (n) | 3 | 5 |")
    assert "200 resamples" in md and "HD95 0" in md
    assert "1.5 × 1.5 × 3 mm (data.preprocess.spacing)" in md
    assert "| Per-case metrics | per_case.csv |" in md
    assert "Dice per class over the test cases" in md
    assert "![Training curves](figures/training_curves.png)" in md
    assert "Decision threshold" not in md and "Confusion matrix" not in md


def test_assumed_spacing_reports_voxels(tmp_path, summary):
    summary.update(spacing=[1.0, 1.0], spacing_assumed=True)
    md = write_report(tmp_path, summary)[0].read_text(encoding="utf-8")
    assert "HD95 (voxels) val" in md and "HD95 is in voxels" in md


def test_html_is_well_formed(tmp_path, summary):
    summary["class_names"] = ["bg", "<b>liver</b>", "left kidney"]
    summary["val"]["dice_b_liver_b"] = 0.9
    page = write_report(tmp_path, summary)[1].read_text(encoding="utf-8")
    stack = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag not in {"meta", "img"}:
                stack.append(tag)

        def handle_endtag(self, tag):
            assert stack.pop() == tag

    Parser().feed(page)
    assert stack == []
    assert "<h2>Metrics per class</h2>" in page and "&lt;b&gt;liver&lt;/b&gt;" in page
    assert "<b>liver" not in page


def test_sparse_summaries_do_not_fail(tmp_path):
    md = write_report(tmp_path / "a", {"task": "segmentation"})[0].read_text(encoding="utf-8")
    assert md.startswith("# medxfer segmentation report")
    # class names missing: classes come from the dice_<class> keys
    content = build_report_content({"task": "segmentation", "test": {"dice": 0.5,
                                                                     "dice_tumour": 0.5}})
    assert [row[0] for row in content.class_rows] == ["tumour", "Mean (foreground)"]
    assert content.class_rows[0][1] == "n/a"


def test_classification_reports_get_no_class_table(summary):
    summary["task"] = "classification"
    content = build_report_content(summary)
    assert content.class_rows == [] and content.metric_rows


def test_dice_boxplot(tmp_path):
    dice = np.array([[0.9, 0.1], [0.8, math.nan], [0.95, 0.5]])
    path = plot_dice_boxplot(dice, ["liver", "kidney"], tmp_path / "box.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    plot_dice_boxplot(np.zeros((0, 2)), ["liver", "kidney"], tmp_path / "none.png")
    assert (tmp_path / "none.png").read_bytes()[:8] == PNG_MAGIC


def test_overlays(tmp_path):
    truth = np.zeros((12, 10), dtype=np.int64)
    truth[2:6, 2:6] = 1
    pred = np.roll(truth, 1, axis=1)
    pred[8:10, 1:3] = 2
    panels = [{"image": np.random.default_rng(0).normal(size=(12, 10)), "truth": truth,
               "prediction": pred, "title": "best: a"},
              {"image": np.zeros((12, 10)), "truth": np.zeros_like(truth),
               "prediction": np.ones_like(truth), "title": "worst: b", "origin": "lower"}]
    path = plot_segmentation_overlays(panels, ["lesion", "cyst"], tmp_path / "o.png")
    assert path.read_bytes()[:8] == PNG_MAGIC and len(path.read_bytes()) > 5000
    plot_segmentation_overlays([], ["lesion"], tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes()[:8] == PNG_MAGIC


def test_overlays_show_missed_extra_and_wrong_class_voxels_in_their_own_colours():
    truth = np.zeros((6, 6), dtype=np.int64)
    truth[1:3, 1:3] = 1  # class 1: the top-left 2x2
    truth[4, 4] = 2
    pred = truth.copy()
    pred[1, 1] = 0  # missed
    pred[0, 5] = 1  # extra
    pred[4, 4] = 1  # wrong class
    fig = segmentation_overlays_figure(
        [{"image": np.zeros((6, 6)), "truth": truth, "prediction": pred, "title": "case"}],
        ["anterior", "posterior"])
    errors = fig.axes[3]
    assert errors.get_title() == "errors (vs ground truth)"
    layer = errors.images[-1].get_array()  # RGBA over the image
    colour = {name: np.array(rgb) for name, rgb in ERROR_COLOURS.items()}
    assert np.allclose(layer[1, 1, :3], colour["missed (false negative)"])
    assert np.allclose(layer[0, 5, :3], colour["extra (false positive)"])
    assert np.allclose(layer[4, 4, :3], colour["wrong class"])
    assert layer[2, 2, 3] == 0 and layer[3, 3, 3] == 0  # right or background: clear
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["anterior", "posterior", "missed (false negative)",
                      "extra (false positive)", "wrong class"]


@pytest.mark.parametrize("axcodes, axis, plane, edges", [
    ("RAS", 2, "axial", {"right": "R", "left": "L", "top": "A", "bottom": "P"}),
    ("RAS", 1, "coronal", {"right": "R", "left": "L", "top": "S", "bottom": "I"}),
    ("RAS", 0, "sagittal", {"right": "A", "left": "P", "top": "S", "bottom": "I"}),
    ("LPS", 2, "axial", {"right": "L", "left": "R", "top": "P", "bottom": "A"}),
    ("PIR", 1, "axial", {"right": "P", "left": "A", "top": "R", "bottom": "L"}),
    (None, 2, "axis 2", {}), ("RRS", 2, "axis 2", {}),
])
def test_slices_are_named_by_their_plane_and_edges(axcodes, axis, plane, edges):
    assert slice_view(axcodes, axis) == {"plane": plane, "edges": edges}


def test_overlays_name_the_edges_of_a_volume_slice():
    truth = np.zeros((6, 6), dtype=np.int64)
    view = slice_view("RAS", 2)
    fig = segmentation_overlays_figure(
        [{"image": np.zeros((6, 6)), "truth": truth, "prediction": truth, "origin": "lower",
          "edges": view["edges"], "title": "best: a\naxial slice 3 of 6"}], ["lesion"])
    letters = {t.get_text() for t in fig.axes[0].texts}
    assert {"R", "L", "A", "P"} <= letters


def test_per_case_csv(tmp_path):
    rows = [{"id": "a", "split": "test", "dice": 0.5, "hd95": math.inf},
            {"split": "val", "id": "b,c", "dice": 1.0, "extra": 3}]
    write_per_case_csv(tmp_path / "cases.csv", rows, first=["id", "split"])
    with open(tmp_path / "cases.csv", newline="", encoding="utf-8") as handle:
        read = list(csv.reader(handle))
    assert read == [["id", "split", "dice", "hd95", "extra"], ["a", "test", "0.5", "", ""],
                    ["b,c", "val", "1.0", "", "3"]]
