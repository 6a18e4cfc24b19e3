"""Metrics against hand-checked examples and scikit-learn; thresholds; bootstrap; monitor."""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pytest
from sklearn import metrics as skm

from medxfer import metrics as M
from medxfer.errors import ConfigError
from medxfer.metrics import (
    bootstrap_ci,
    choose_threshold,
    classification_metrics,
    confusion_matrix,
    predict_labels,
    regression_metrics,
    select_monitor_metric,
)

# 4 negatives, 4 positives; at 0.5: TP 3 (0.8, 0.9, 0.7), FN 1 (0.3), FP 1 (0.6), TN 3.
Y_TOY = np.array([0, 0, 0, 1, 1, 1, 1, 0])
P1_TOY = np.array([0.1, 0.4, 0.6, 0.8, 0.3, 0.9, 0.7, 0.2])


def binary_probs(p1):
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], axis=1)


def random_binary(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, binary_probs(p1)


def random_multiclass(n, c, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    p = rng.dirichlet(np.ones(c), n)
    p[np.arange(n), y] += 0.4
    return y, p / p.sum(axis=1, keepdims=True)


def test_binary_metrics_hand_checked():
    m = classification_metrics(Y_TOY, binary_probs(P1_TOY))
    expected = {"accuracy": 0.75, "balanced_accuracy": 0.75, "precision": 0.75, "recall": 0.75,
                "specificity": 0.75, "f1": 0.75, "auc": 14 / 16}
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-6), key
    assert m["n"] == 8 and isinstance(m["n"], int)


def test_binary_threshold_is_inclusive_and_moves_predictions():
    m = classification_metrics(Y_TOY, binary_probs(P1_TOY), threshold=0.85)
    assert (m["recall"], m["specificity"], m["precision"]) == pytest.approx((0.25, 1.0, 1.0))
    # a score equal to the threshold is positive: 0.9 >= 0.9
    assert classification_metrics(Y_TOY, binary_probs(P1_TOY), threshold=0.9)["recall"] == 0.25
    assert m["auc"] == pytest.approx(14 / 16, abs=1e-6)  # AUC does not depend on the threshold


def test_binary_metrics_match_sklearn():
    y, p = random_binary(500, seed=3)
    m = classification_metrics(y, p, threshold=0.4)
    pred = (p[:, 1] >= 0.4).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), rel=1e-6)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), rel=1e-6)
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred), rel=1e-6)
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred), rel=1e-6)
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0), rel=1e-6)
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred), rel=1e-6)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p[:, 1]), rel=1e-6)


def test_multiclass_metrics_match_sklearn():
    y, p = random_multiclass(400, 4, seed=1)
    m = classification_metrics(y, p, threshold=0.99)  # ignored: argmax
    pred = p.argmax(axis=1)
    prec, rec, f1, _ = skm.precision_recall_fscore_support(y, pred, average="macro")
    mcm = skm.multilabel_confusion_matrix(y, pred)
    spec = np.mean([tn / (tn + fp) for (tn, fp), _ in mcm])
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), rel=1e-6)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), rel=1e-6)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((prec, rec, f1), rel=1e-6)
    assert m["specificity"] == pytest.approx(spec, rel=1e-6)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"), rel=1e-6)


def test_single_class_gives_nan_auc_not_a_crash():
    p = binary_probs([0.2, 0.7, 0.9, 0.4])
    m = classification_metrics(np.ones(4, dtype=int), p)
    assert math.isnan(m["auc"])
    assert m["recall"] == 0.5 and m["accuracy"] == 0.5
    assert m["balanced_accuracy"] == 0.5  # mean recall over the classes present
    y, p3 = np.array([0, 0, 0]), np.full((3, 3), 1 / 3)
    assert math.isnan(classification_metrics(y, p3)["auc"])


def test_multiclass_auc_skips_a_class_absent_from_labels():
    y, p = random_multiclass(200, 3, seed=2)
    keep = y != 2
    m = classification_metrics(y[keep], p[keep])
    per_class = [skm.roc_auc_score(y[keep] == c, p[keep, c]) for c in (0, 1)]
    assert m["auc"] == pytest.approx(np.mean(per_class), rel=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="cases"):
        classification_metrics([0, 1, 1], binary_probs([0.1, 0.9]))
    with pytest.raises(ValueError, match="labels"):
        classification_metrics([0, 2], binary_probs([0.1, 0.9]))


def test_confusion_matrix_hand_checked():
    cm = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], num_classes=4)
    assert cm == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert all(type(v) is int for row in cm for v in row)
    assert predict_labels(binary_probs(P1_TOY), 0.5).tolist() == [0, 0, 1, 1, 0, 1, 1, 0]


def test_youden_threshold_is_the_optimal_roc_point():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    p1 = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9, 0.65])
    t = choose_threshold(y, binary_probs(p1), "val_youden")
    assert t == pytest.approx(0.65)  # sensitivity 4/5, specificity 1: J = 0.8

    def youden(threshold):
        m = classification_metrics(y, binary_probs(p1), threshold=threshold)
        return m["recall"] + m["specificity"] - 1

    assert youden(t) == pytest.approx(max(youden(c) for c in p1))


def test_f1_threshold_maximises_f1():
    y, p = random_binary(120, seed=5)
    t = choose_threshold(y, p, "val_f1")
    best = max(skm.f1_score(y, p[:, 1] >= c) for c in p[:, 1])
    assert skm.f1_score(y, p[:, 1] >= t) == pytest.approx(best)
    assert choose_threshold(y, p[:, 1], "val_f1") == t  # 1-D positive-class scores work too


def test_accuracy_threshold_maximises_accuracy_nearest_half():
    y, p = random_binary(150, seed=7)
    t = choose_threshold(y, p, "val_accuracy")
    accuracy = lambda c: np.mean((p[:, 1] >= c) == (y == 1))  # noqa: E731
    best = max(accuracy(c) for c in np.append(p[:, 1], 0.5))
    assert accuracy(t) == pytest.approx(best)
    # separable toy: every threshold in (0.3, 0.7] is perfect; 0.5 is the tie nearest 0.5
    y2, p2 = np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.7, 0.9])
    assert choose_threshold(y2, p2, "val_accuracy") == 0.5
    # imbalanced: accuracy prefers a higher threshold than Youden's J
    y3 = np.array([0] * 8 + [1] * 2)
    p3 = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.55, 0.6, 0.45, 0.9])
    assert choose_threshold(y3, p3, "val_accuracy") > choose_threshold(y3, p3, "val_youden")


def test_one_standard_error_threshold_is_nearest_half_among_nearly_best():
    # 200 cases, separable: the most accurate threshold (0.2) gets one more case right
    # than 0.5 does; one standard error (its one-case floor here) covers that case
    y = np.array([0] * 100 + [1] * 100)
    p = np.concatenate([np.linspace(0.01, 0.1, 100), [0.2], np.linspace(0.6, 0.99, 99)])
    assert choose_threshold(y, p, "val_accuracy") == pytest.approx(0.2)
    t = choose_threshold(y, p, "val_accuracy_1se")
    assert t == 0.5
    accuracy = lambda c: np.mean((p >= c) == (y == 1))  # noqa: E731
    assert accuracy(0.2) - accuracy(t) <= M.accuracy_standard_error(1.0, y.size) + 1e-12
    # far from the best (many cases), the rule keeps the best threshold
    y2 = np.array([0] * 50 + [1] * 50)
    p2 = np.concatenate([np.full(50, 0.1), np.full(40, 0.3), np.full(10, 0.9)])
    assert choose_threshold(y2, p2, "val_accuracy_1se") == pytest.approx(0.3)


def test_accuracy_standard_error_has_a_one_case_floor():
    assert M.accuracy_standard_error(1.0, 50) == pytest.approx(1 / 50)
    assert M.accuracy_standard_error(0.9, 100) == pytest.approx(0.03)
    assert M.accuracy_standard_error(0.9, 0) == 0.0


def test_threshold_degenerate_and_unknown_method():
    with pytest.warns(UserWarning, match="single class"):
        assert choose_threshold([1, 1, 1], binary_probs([0.2, 0.5, 0.9]), "val_youden") == 0.5
    with pytest.raises(ValueError, match="val_youden"):
        choose_threshold(Y_TOY, binary_probs(P1_TOY), "youden")


def test_regression_metrics_hand_checked_and_sklearn():
    m = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    assert m["mae"] == pytest.approx(2 / 3) and m["mse"] == pytest.approx(4 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(4 / 3)) and m["r2"] == pytest.approx(-1.0)
    assert m["n"] == 3
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    pred = y + rng.normal(scale=0.3, size=50)
    assert regression_metrics(y, pred)["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert math.isnan(regression_metrics([2.0, 2.0], [1.0, 3.0])["r2"])


def test_bootstrap_contains_estimate_and_is_deterministic():
    y, p = random_binary(300, seed=7)
    fn = functools.partial(classification_metrics, threshold=0.45)
    point = fn(y, p)
    ci = bootstrap_ci(y, p, fn, n_boot=120, seed=11)
    assert "n" not in ci and set(ci) == set(point) - {"n"}
    for key, (lo, hi) in ci.items():
        assert lo <= point[key] <= hi, key
        assert hi - lo < 0.25
    assert bootstrap_ci(y, p, fn, n_boot=120, seed=11) == ci
    assert bootstrap_ci(y, p, fn, n_boot=120, seed=12) != ci


def test_bootstrap_batched_path_equals_per_resample_path():
    y, p = random_multiclass(80, 3, seed=4)
    # 150 resamples of 80 x 3 scores span two batches of the fast path
    fast = bootstrap_ci(y, p, classification_metrics, n_boot=150, seed=0)
    slow = bootstrap_ci(y, p, lambda a, b: classification_metrics(a, b), n_boot=150, seed=0)
    for key in fast:
        assert fast[key] == pytest.approx(slow[key], abs=1e-6), key
    yr = np.linspace(0, 1, 40)
    reg_fast = bootstrap_ci(yr, yr ** 2, regression_metrics, n_boot=50, seed=0)
    reg_slow = bootstrap_ci(yr, yr ** 2, lambda a, b: regression_metrics(a, b), n_boot=50, seed=0)
    for key in reg_fast:
        assert reg_fast[key] == pytest.approx(reg_slow[key]), key


def test_bootstrap_skips_nan_resamples():
    y = np.array([0] * 9 + [1])  # many resamples hold no positive case: AUC undefined there
    p = binary_probs(np.linspace(0.05, 0.95, 10))
    lo, hi = bootstrap_ci(y, p, classification_metrics, n_boot=200, seed=0)["auc"]
    assert math.isfinite(lo) and math.isfinite(hi)
    lo, hi = bootstrap_ci(np.zeros(5, int), p[:5], classification_metrics, n_boot=20, seed=0)["auc"]
    assert math.isnan(lo) and math.isnan(hi)
    assert bootstrap_ci(y, p, classification_metrics, n_boot=0, seed=0) == {}


def test_bootstrap_1000_resamples_of_624_cases_is_fast():
    y, p = random_binary(624, seed=0)
    start = time.perf_counter()
    ci = bootstrap_ci(y, p, functools.partial(classification_metrics, threshold=0.5),
                      n_boot=1000, seed=0)
    assert time.perf_counter() - start < 6.0  # ~0.5 s alone; generous for a shared CPU
    assert ci["auc"][0] < ci["auc"][1]


@pytest.mark.parametrize(("task", "name", "expected"), [
    ("classification", "auto", ("auc", "max")),
    ("regression", "auto", ("mae", "min")),
    ("segmentation", "auto", ("dice", "max")),
    ("classification", "val_loss", ("loss", "min")),
    ("classification", "val_balanced_accuracy", ("balanced_accuracy", "max")),
    ("regression", "rmse", ("rmse", "min")),
    ("regression", "r2", ("r2", "max")),
    ("segmentation", "val_dice_loss", ("dice_loss", "min")),
])
def test_select_monitor_metric(task, name, expected):
    assert select_monitor_metric(task, name) == expected


def test_select_monitor_metric_errors():
    with pytest.raises(ConfigError, match="task"):
        select_monitor_metric("detection", "auto")
    with pytest.raises(ConfigError, match="Did you mean 'auc'"):
        select_monitor_metric("classification", "val_acu", available=["val_auc", "val_loss"])
    assert select_monitor_metric("classification", "auto", available=["auc"]) == ("auc", "max")
