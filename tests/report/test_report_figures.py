"""Figures are valid, non-trivial PNGs, also for degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medxfer.report import (plot_confusion_matrix, plot_member_training_curves, plot_roc_curve,
                            plot_training_curves)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    assert not list(path.parent.glob(".*.tmp")), "temporary file left behind"


def history(epochs=6):
    return [{"epoch": e - 1, "train_loss": 1 / e, "train_L_new": 0.8 / e, "train_L_pre": 0.2 / e,
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
