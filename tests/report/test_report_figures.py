"""Figures are valid, non-trivial PNGs, also for degenerate inputs, and show what a reader
needs: every curve visible and the kept epoch marked; the ROC's operating point, bootstrap
band, split and number of cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medxfer.metrics import bootstrap_ci, classification_metrics
from medxfer.report import (plot_confusion_matrix, plot_member_training_curves, plot_roc_curve,
                            plot_training_curves)
from medxfer.report.curves import training_curves_figure
from medxfer.report.roc import roc_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    assert not list(path.parent.glob(".*.tmp")), "temporary file left behind"


def history(epochs=6):
    return [{"epoch": e, "train_loss": 1 / e, "train_L_new": 0.8 / e, "train_L_pre": 0.2 / e,
             "val_loss": 1.2 / e, "val_auc": 0.6 + 0.05 * e, "val_accuracy": 0.5 + 0.05 * e,
             "lr": 1e-3 / e} for e in range(1, epochs + 1)]


def test_training_curves(tmp_path):
    out = plot_training_curves(history(), tmp_path / "figures" / "training_curves.png")
    assert out == tmp_path / "figures" / "training_curves.png"
    assert_png(out)


def test_training_curves_with_gaps_and_empty_history(tmp_path):
    rows = history(4)
    rows[1]["val_auc"] = math.nan
    rows[2]["val_loss"] = None
    del rows[3]["epoch"]
    assert_png(plot_training_curves(rows, tmp_path / "gaps.png"))
    assert_png(plot_training_curves([], tmp_path / "empty.png"), min_bytes=2000)


def test_member_training_curves_mark_each_members_kept_epoch(tmp_path):
    members = {"m0 (seed 0)": history(5), "m1 (seed 1)": history(3)}
    members["m1 (seed 1)"][1]["val_auc"] = math.nan
    out = plot_member_training_curves(members, tmp_path / "members.png", metric="val_auc",
                                      best_epochs={"m0 (seed 0)": 4, "m1 (seed 1)": 2})
    assert_png(out)
    # a kept epoch that is missing or has no value draws no star, and nothing fails
    assert_png(plot_member_training_curves(members, tmp_path / "nostar.png", metric="auc",
                                           best_epochs={"m0 (seed 0)": 99}))
    assert_png(plot_member_training_curves({}, tmp_path / "empty.png"), min_bytes=2000)


@pytest.mark.parametrize("n_classes", [2, 5])
def test_confusion_matrix_figure(tmp_path, n_classes):
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 50, (n_classes, n_classes)).tolist()
    cm[0] = [0] * n_classes  # a class with no cases must not divide by zero
    names = [f"class_{i}" for i in range(n_classes)]
    assert_png(plot_confusion_matrix(cm, names, tmp_path / "cm.png", title="Test <set>"))


def test_roc_binary_multiclass_and_single_class(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    p1 = np.clip(0.4 * y + 0.6 * rng.random(100), 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    assert_png(plot_roc_curve(y, probs, tmp_path / "roc.png", ["normal", "pneumonia"],
                              threshold=0.5))
    y3 = rng.integers(0, 3, 90)
    p3 = rng.dirichlet(np.ones(3), 90)
    assert_png(plot_roc_curve(y3, p3, tmp_path / "roc3.png", ["a", "b", "c"]))
    assert_png(plot_roc_curve(np.ones(10, dtype=int), probs[:10], tmp_path / "roc1.png", None))


def panel(fig, title):
    return next(ax for ax in fig.axes if ax.get_title().startswith(title))


def test_training_curves_hide_no_line_and_mark_the_kept_epoch():
    rows = history(5)
    for row in rows:  # balanced data: the two accuracies coincide
        row["val_balanced_accuracy"] = row["val_accuracy"]
    fig = training_curves_figure(rows, selected_epoch=4, monitor=["auc", "max"])
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    # every validation metric has a panel of its own
    assert "AUC (validation; selection metric)" in titles
    assert "Accuracy (validation)" in titles
    assert "Balanced accuracy (validation = accuracy)" in titles  # said, as both are drawn
    losses, terms = panel(fig, "Loss"), panel(fig, "Loss terms")
    styles = [(line.get_linestyle(), line.get_marker()) for line in losses.lines
              if line.get_label() in ("training", "validation")]
    assert len(set(styles)) == 2  # training and validation loss differ in dash and marker
    assert [line.get_label() for line in terms.lines][:2] == ["L_new (task)",
                                                             "L_pre (retention)"]
    for ax in fig.axes:  # the kept epoch, in every panel
        if ax.axison:
            assert any(list(line.get_xdata()) == [4, 4] for line in ax.lines), ax.get_title()
    auc = panel(fig, "AUC")
    star = [line for line in auc.lines if line.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [4]
    assert list(star[0].get_ydata()) == pytest.approx([0.6 + 0.05 * 4])
    assert "dashed line: epoch 4, kept (best AUC)" in fig._suptitle.get_text()


def test_training_loss_equal_to_l_new_is_said_not_drawn_twice():
    rows = [{"epoch": e, "train_loss": 1 / e, "train_L_new": 1 / e, "val_loss": 1.1 / e,
             "val_dice": 0.1 * e} for e in (1, 2, 3)]
    fig = training_curves_figure(rows, selected_epoch=3, monitor="val_dice", select="last")
    assert not any(ax.get_title().startswith("Loss terms") for ax in fig.axes)
    text = fig._suptitle.get_text()
    assert "training loss = L_new" in text and "epoch 3, kept (the last)" in text


def test_equal_series_in_one_panel_are_labelled_as_equal():
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e} for e in (1, 2)]
    labels = [line.get_label() for line in panel(training_curves_figure(rows), "Loss").lines]
    assert "validation (= training)" in labels


def binary_scores(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, np.stack([1 - p1, p1], axis=1)


def test_roc_shows_the_operating_point_band_split_and_n():
    y, probs = binary_scores()
    fig = roc_figure(y, probs, ["normal", "pneumonia"], threshold=0.6, n_boot=200, seed=3,
                     split="test")
    ax = fig.axes[0]
    positives = int(y.sum())
    assert ax.get_title() == (f"ROC, test split (n = 200: {positives} pneumonia, "
                              f"{200 - positives} normal)\npositive class: pneumonia")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    point = next(line for line in ax.lines if line.get_label().startswith("operating point"))
    predicted = probs[:, 1] >= 0.6
    sensitivity, specificity = predicted[y == 1].mean(), 1 - predicted[y == 0].mean()
    assert list(point.get_xdata()) == pytest.approx([1 - specificity])
    assert list(point.get_ydata()) == pytest.approx([sensitivity])
    assert f"sensitivity {sensitivity:.2f}, specificity {specificity:.2f}" in point.get_label()
    assert point.get_label().startswith("operating point (threshold 0.600): ")
    assert any(label.startswith("95% bootstrap band (200 resamples)") for label in labels)
    band = ax.collections[0].get_paths()[0].vertices
    assert 0.0 <= band[:, 1].min() and band[:, 1].max() <= 1.0
    # the AUC interval is the report's: the same resamples as bootstrap_ci
    ci = bootstrap_ci(y, probs, classification_metrics, n_boot=200, seed=3)["auc"]
    curve = next(label for label in labels if label.startswith("AUC"))
    assert f"(95% CI {ci[0]:.3f}-{ci[1]:.3f})" in curve


def test_roc_without_resamples_has_no_band_and_marks_the_argmax_point():
    y, probs = binary_scores()
    ax = roc_figure(y, probs, ["a", "b"], n_boot=0).axes[0]
    assert not ax.collections
    assert any("threshold 0.500" in line.get_label() for line in ax.lines)


def test_multiclass_roc_marks_each_class_operating_point():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 90)
    ax = roc_figure(y, rng.dirichlet(np.ones(3), 90), ["a", "b", "c"], n_boot=50,
                    split="validation").axes[0]
    assert ax.get_title().startswith("ROC one-vs-rest, validation split (n = 90: ")
    points = [line for line in ax.lines if line.get_label().startswith("operating point")]
    assert len(points) == 3 and all("argmax" in p.get_label() for p in points)
    assert len(ax.collections) == 3  # a band per class


def test_noise_in_a_bounded_metric_is_not_drawn_as_a_collapse():
    rows = [{"epoch": e, "val_recall": r, "val_mae": m}
            for e, r, m in ((1, 1.0, 2.0), (2, 0.99, 2.01), (3, 0.995, 1.99))]
    fig = training_curves_figure(rows)
    low, high = panel(fig, "Recall").get_ylim()
    assert high - low >= 0.1 and high <= 1.01 and low <= 0.99
    low, high = panel(fig, "MAE").get_ylim()  # not bounded: the axis follows the data
    assert high - low < 0.1
