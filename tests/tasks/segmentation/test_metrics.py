"""Segmentation metrics on hand-made masks: values, edge cases, spacing, summaries, CIs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from medxfer.tasks.segmentation.metrics import (
    case_metrics,
    class_key,
    foreground_dice,
    mean_foreground_dice,
    representative_cases,
    segmentation_ci,
    segmentation_summary,
)

NAMES = ["background", "lesion"]


def square(shape=(10, 10), box=(slice(2, 6), slice(2, 6)), value=1):
    mask = np.zeros(shape, dtype=np.int64)
    mask[box] = value
    return mask


def test_perfect_prediction_2d():
    truth = square()
    m = case_metrics(truth, truth, 2, NAMES, case_id="a")
    assert m.id == "a" and m.class_names == ["lesion"]
    assert m.dice.tolist() == [1.0] and m.iou.tolist() == [1.0] and m.hd95.tolist() == [0.0]
    assert m.true_fraction.tolist() == m.pred_fraction.tolist() == [0.16]


def test_half_overlap():
    truth = square(box=(slice(0, 4), slice(0, 4)))        # 16 voxels
    pred = square(box=(slice(0, 4), slice(2, 6)))         # 16 voxels, 8 shared
    m = case_metrics(pred, truth, 2, NAMES)
    assert m.dice[0] == pytest.approx(0.5)                # 2 * 8 / 32
    assert m.iou[0] == pytest.approx(1 / 3)               # 8 / 24
    assert m.hd95[0] == pytest.approx(2.0)                # surfaces two columns apart
    assert m.true_fraction[0] == m.pred_fraction[0] == pytest.approx(0.16)


def test_spacing_scales_hd95_along_its_axis():
    truth = square(box=(slice(0, 4), slice(0, 4)))
    pred = square(box=(slice(0, 4), slice(2, 6)))        # shifted along axis 1
    assert case_metrics(pred, truth, 2, spacing=[1.0, 3.0]).hd95[0] == pytest.approx(6.0)
    assert case_metrics(pred, truth, 2, spacing=[3.0, 1.0]).hd95[0] == pytest.approx(2.0)
    assert case_metrics(pred, truth, 2, spacing=0.5).hd95[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(pred, truth, 2, spacing=[1.0, 1.0, 1.0])


def test_empty_cases_stay_finite():
    empty = np.zeros((10, 20), dtype=np.int64)
    both = case_metrics(empty, empty, 2, NAMES)
    assert (both.dice[0], both.iou[0], both.hd95[0]) == (1.0, 1.0, 0.0)
    diagonal = math.hypot(10 * 2.0, 20 * 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MONAI "all 0" warnings: empties never reach it
        false_positive = case_metrics(square((10, 20)), empty, 2, NAMES, spacing=[2.0, 1.0])
        missed = case_metrics(empty, square((10, 20)), 2, NAMES, spacing=[2.0, 1.0])
    for m in (false_positive, missed):
        assert (m.dice[0], m.iou[0]) == (0.0, 0.0)
        assert m.hd95[0] == pytest.approx(diagonal)
    summary = segmentation_summary([both, false_positive, missed])
    assert all(math.isfinite(v) for v in summary.values())
    assert summary["dice"] == pytest.approx(1 / 3)


def test_multiclass_3d():
    truth = np.zeros((6, 6, 6), dtype=np.int64)
    truth[1:3, 1:3, 1:3] = 1
    truth[4:6, 4:6, 4:6] = 2
    pred = truth.copy()
    pred[4:6, 4:6, 4:6] = 0  # class 2 missed, class 3 absent in both
    m = case_metrics(pred, truth, 4, ["bg", "liver", "left kidney", "spleen"])
    assert m.dice.tolist() == [1.0, 0.0, 1.0]
    assert m.iou.tolist() == [1.0, 0.0, 1.0]
    assert m.hd95[0] == 0.0 and m.hd95[2] == 0.0
    assert m.hd95[1] == pytest.approx(math.sqrt(3 * 36))
    assert m.mean_dice == pytest.approx(2 / 3)
    row = m.as_row()
    assert row["dice_left_kidney"] == 0.0 and row["true_fraction_spleen"] == 0.0
    assert row["pred_fraction_liver"] == pytest.approx(8 / 216)
    summary = segmentation_summary([m, case_metrics(truth, truth, 4,
                                                    ["bg", "liver", "left kidney", "spleen"])])
    assert summary["dice_left_kidney"] == pytest.approx(0.5)
    assert summary["dice"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert summary["n"] == 2


def test_fraction_errors():
    truth = square((10, 10), box=(slice(0, 5), slice(0, 10)))   # 0.5
    pred = square((10, 10), box=(slice(0, 3), slice(0, 10)))    # 0.3
    summary = segmentation_summary([case_metrics(pred, truth, 2),
                                    case_metrics(truth, truth, 2)])
    assert summary["fraction_mae"] == pytest.approx(0.1)
    assert summary["fraction_mse"] == pytest.approx(0.02)


def test_summary_keys_and_empty():
    m = case_metrics(square(), square(), 3, ["bg", "a", "b"])
    summary = segmentation_summary([m])
    assert list(summary) == ["dice", "dice_a", "dice_b", "iou", "iou_a", "iou_b", "hd95",
                             "hd95_a", "hd95_b", "fraction_mae", "fraction_mse", "n"]
    assert segmentation_summary([])["n"] == 0


def test_bad_input():
    with pytest.raises(ValueError, match="differ in shape"):
        case_metrics(np.zeros((4, 4), int), np.zeros((4, 5), int), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        case_metrics(np.full((4, 4), 2), np.zeros((4, 4), int), 2)
    with pytest.raises(ValueError, match="class names"):
        case_metrics(np.zeros((4, 4), int), np.zeros((4, 4), int), 3, ["bg", "a"])
    with pytest.raises(ValueError, match="duplicate"):
        case_metrics(np.zeros((4, 4), int), np.zeros((4, 4), int), 3, ["bg", "a b", "a_b"])


def test_class_key():
    assert class_key("left kidney") == "left_kidney"
    assert class_key("T2/FLAIR lesion") == "T2_FLAIR_lesion"


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    truth = square()
    cases = [case_metrics(truth, truth, 2), case_metrics(np.zeros_like(truth), truth, 2),
             case_metrics(square(box=(slice(2, 6), slice(3, 7))), truth, 2)] * 4
    ci = segmentation_ci(cases, n_boot=200, seed=3)
    assert ci == segmentation_ci(cases, n_boot=200, seed=3)
    assert "n" not in ci and set(ci) >= {"dice", "dice_1", "hd95", "fraction_mae"}
    low, high = ci["dice"]
    assert low <= segmentation_summary(cases)["dice"] <= high
    assert segmentation_ci(cases, n_boot=0, seed=0) == {}


def test_representative_cases():
    truth = square()
    cases = [case_metrics(p, truth, 2, case_id=str(i)) for i, p in enumerate(
        [np.zeros_like(truth), truth, square(box=(slice(2, 6), slice(3, 7)))])]
    assert representative_cases(cases) == {"best": 1, "median": 2, "worst": 0}
    assert representative_cases(cases[:1]) == {"best": 0, "median": 0, "worst": 0}
    assert representative_cases([]) == {}


@pytest.mark.parametrize("spatial", [(8, 8), (4, 6, 5)])
def test_per_epoch_dice_matches_case_metrics(spatial):
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 3, *spatial, generator=gen).softmax(dim=1)
    labels = torch.randint(0, 3, (3, 1, *spatial), generator=gen)
    labels[2] = 0  # an all-background case
    per_case = foreground_dice(probs, labels)
    expected = [case_metrics(probs[i].argmax(0), labels[i, 0], 3).mean_dice for i in range(3)]
    assert per_case.tolist() == pytest.approx(expected, abs=1e-6)
    assert mean_foreground_dice(probs, labels[:, 0]) == pytest.approx(np.mean(expected), abs=1e-6)
