"""The metric table: it holds exactly what each task computes, one direction per metric,
and the views and queries that reports, compare, the CLI and TensorBoard read."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medxfer.errors import ConfigError
from medxfer.metric_table import (
    COLUMNS,
    METRICS,
    TASKS,
    bounds,
    default_monitor,
    label,
    lower_is_better,
    metric,
    metrics_for,
    short_label,
    sort_key,
)
from medxfer.metrics import (
    VALIDATION_METRICS,
    classification_metrics,
    expected_calibration_error,
    regression_metrics,
    select_monitor_metric,
)
from medxfer.tasks.segmentation.metrics import case_metrics, segmentation_summary

CLASSES = ["background", "anterior", "posterior"]


def classification_outputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 40)
    logits = rng.normal(size=(40, 3)) + 2 * np.eye(3)[y]
    return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def segmentation_cases(seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(4):
        true = rng.integers(0, 3, (10, 12))
        pred = np.where(rng.random((10, 12)) < 0.7, true, rng.integers(0, 3, (10, 12)))
        cases.append(case_metrics(pred, true, 3, CLASSES, case_id=str(i)))
    return cases


def per_class_keys(summary: dict) -> set[str]:
    return {f"{m}_{k}" for m in metrics_for("segmentation", per_class=True)
            for k in ("anterior", "posterior")} & set(summary)


# ---------------------------------------------------------------------------------------
# the table against the metric functions
# ---------------------------------------------------------------------------------------


def test_classification_entries_are_what_classification_computes():
    y, probs = classification_outputs()
    computed = classification_metrics(y, probs)
    # The run's and the ensemble's evaluations add ECE and the model's loss.
    assert set(metrics_for("classification")) == {*computed, "ece", "loss"}
    # The table is in the order the function returns its metrics (metrics.json's order).
    assert [m for m in metrics_for("classification") if m in computed] == list(computed)
    assert expected_calibration_error(y, probs) >= 0


def test_regression_entries_are_what_regression_computes():
    computed = regression_metrics(np.arange(6.0), np.arange(6.0) + 0.5)
    assert set(metrics_for("regression")) == {*computed, "loss"}
    assert [m for m in metrics_for("regression") if m in computed] == list(computed)


def test_segmentation_entries_are_what_the_segmentation_summary_computes():
    cases = segmentation_cases()
    summary = segmentation_summary(cases)
    per_class = per_class_keys(summary)
    assert len(per_class) == 2 * len(metrics_for("segmentation", per_class=True))
    plain = [k for k in summary if k not in per_class]
    assert set(metrics_for("segmentation")) == {*plain, "loss"}  # the validation's loss
    assert [m for m in metrics_for("segmentation") if m in summary] == plain
    # Each per-class metric is a case field; the plain key is the mean over the classes.
    for name in metrics_for("segmentation", per_class=True):
        per_class_means = np.mean([getattr(c, name) for c in cases], axis=0)
        assert summary[name] == pytest.approx(per_class_means.mean())
        assert summary[f"{name}_anterior"] == pytest.approx(per_class_means[0])


def test_aliases_are_never_computed_but_read():
    aliases = [m for m in METRICS if m.alias_of]
    assert [m.name for m in aliases] == ["sensitivity"]
    for entry in aliases:
        assert entry.name not in metrics_for(None)
        target = metric(entry.alias_of)
        assert (entry.direction, entry.bounded, entry.tasks) == \
            (target.direction, target.bounded, target.tasks)
    assert label("sensitivity") == "Sensitivity"


def _validation_keys(task: str) -> set[str]:
    """What the per-epoch validation of a ``task`` run returns, on a tiny model."""
    from medxfer.config import load_config
    from medxfer.training.amp import Precision
    from medxfer.tasks import task_of

    torch.manual_seed(0)
    config = load_config(None, [f"task={task}"])
    cpu, precision = torch.device("cpu"), Precision(None, "cpu")
    if task == "segmentation":
        items = [{"image": torch.rand(1, 8, 8), "label": torch.randint(0, 3, (1, 8, 8)),
                  "id": str(i)} for i in range(2)]
        net = torch.nn.Conv2d(1, 3, 1)
        validate = task_of(config).validator(config, SimpleNamespace(val=items, num_classes=3),
                                             None, cpu, precision,
                                             lambda logits, label: logits.mean())
        return set(validate(net))
    outputs = 3 if task == "classification" else 1
    labels = torch.tensor([0, 1, 2, 1]) if task == "classification" else torch.rand(4)
    loader = [{"image": torch.rand(4, 1, 4, 4), "label": labels, "id": list("abcd")}]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, outputs))
    validate = task_of(config).validator(config, None, loader, cpu, precision,
                                         lambda out, target: out.float().mean())
    return set(validate(net))


@pytest.mark.parametrize("task", TASKS)
def test_validation_metrics_are_what_the_validation_computes(task):
    names = metrics_for(task, validation=True)
    assert _validation_keys(task) == {f"val_{m}" for m in names}
    assert VALIDATION_METRICS[task] == names
    assert names[0] == "loss"
    assert default_monitor(task) in names
    assert select_monitor_metric(task, "auto", available=names)[0] == default_monitor(task)


def test_defaults_and_choices_of_early_stopping_are_unchanged():
    assert {t: default_monitor(t) for t in TASKS} == \
        {"classification": "auc", "regression": "mae", "segmentation": "dice"}
    assert VALIDATION_METRICS == {
        "classification": ("loss", "accuracy", "balanced_accuracy", "precision", "recall",
                           "specificity", "f1", "auc"),
        "regression": ("loss", "mae", "mse", "rmse", "r2"),
        "segmentation": ("loss", "dice"),
    }


# ---------------------------------------------------------------------------------------
# directions and bounds
# ---------------------------------------------------------------------------------------


def test_one_direction_per_metric():
    minimised = {m.name for m in METRICS if lower_is_better(m.name)}
    assert minimised == {"loss", "ece", "mae", "mse", "rmse", "hd95", "fraction_mae",
                         "fraction_mse"}
    for entry in METRICS:
        assert entry.direction in ("max", "min")
        assert lower_is_better(entry.name) == (entry.direction == "min")
    # Outside the table, a name ending in loss is minimised, anything else maximised.
    assert lower_is_better("dice_loss") and not lower_is_better("dice_liver")


@pytest.mark.parametrize("task", TASKS)
def test_checkpoint_selection_and_compare_agree_on_the_best(task):
    """The trainer's mode (select_monitor_metric) and compare's choice of each backbone's
    best strategy (ensemble_members) follow the same table direction."""
    from medxfer.workflows.compare_summary import ensemble_members

    for name in metrics_for(task, validation=True):
        mode = select_monitor_metric(task, name, available=VALIDATION_METRICS[task])[1]
        assert mode == metric(name).direction
        rows = [{"backbone": "b", "runs": [f"/runs/{s}"],
                 "val_monitor": {"name": f"val_{name}", "mean": value}}
                for s, value in (("low", 0.2), ("high", 0.8))]
        best = ensemble_members({"backbones": ["b"], "rows": rows})
        assert best == [Path("/runs/low" if mode == "min" else "/runs/high")], name


def test_bounded_metrics_lie_in_the_unit_interval():
    y, probs = classification_outputs(1)
    values = {**classification_metrics(y, probs), "ece": expected_calibration_error(y, probs),
              **segmentation_summary(segmentation_cases(1))}
    for entry in METRICS:
        if entry.name in values and entry.bounded:
            assert 0.0 <= values[entry.name] <= 1.0, entry.name
            assert bounds(entry.name) == (0.0, 1.0)
    # What is not bounded can leave [0, 1]: R² below 0, HD95 above 1.
    assert regression_metrics(np.arange(4.0), -np.arange(4.0))["r2"] < 0
    assert values["hd95"] > 1 and bounds("hd95") is None and bounds("r2") is None
    assert bounds("dice_anterior") is None  # per-class keys are not in the table


def test_compare_clips_bounded_intervals():
    from medxfer.workflows.compare_summary import mean_std_ci

    assert mean_std_ci([0.97, 0.99, 1.0], bounds("auc"))["ci95"][1] == 1.0
    assert mean_std_ci([0.001, 0.03, 0.0], bounds("fraction_mae"))["ci95"][0] == 0.0
    assert mean_std_ci([0.97, 0.99, 1.0], bounds("mae"))["ci95"][1] > 1.0


# ---------------------------------------------------------------------------------------
# display: labels, order and the fixed-column views
# ---------------------------------------------------------------------------------------


def test_labels_and_units():
    assert [label(n) for n in ("auc", "balanced_accuracy", "hd95", "ece", "n")] == \
        ["AUC (ROC)", "Balanced accuracy", "HD95", "ECE", "Cases (n)"]
    assert short_label("auc") == "AUC" and short_label("precision") == "Precision"
    assert label("dice_liver") == "dice_liver"
    assert [m.name for m in METRICS if m.unit] == ["hd95"]


def test_run_table_order():
    orders = [m.order for m in METRICS if m.order is not None]
    assert len(orders) == len(set(orders))
    names = ["n", "dice_liver", "fraction_mae", "loss", "ece", "accuracy", "auc"]
    assert sorted(names, key=sort_key) == ["auc", "accuracy", "loss", "n", "dice_liver",
                                           "fraction_mae", "ece"]


def test_views_name_table_metrics_of_each_task():
    for view, names in COLUMNS.items():
        assert len(set(names)) == len(names), view
        for name in names:
            metric(name)
    # the domain table's rows follow the run table's order
    assert list(COLUMNS["domain"]) == sorted(COLUMNS["domain"], key=sort_key)
    # each task's headline (primary_bars.png, heatmap.png) is a metric it computes
    assert [metrics_for(t, shown_in="comparison")[0] for t in TASKS] == ["accuracy", "mae",
                                                                         "dice"]
    assert metrics_for("segmentation", shown_in="ensemble") == ("dice", "iou", "hd95")
    assert metrics_for("regression", shown_in="ensemble") == ()
    assert "sensitivity" in metrics_for(None, shown_in="members")


def test_unknown_names_are_refused_with_a_hint():
    with pytest.raises(ConfigError, match="Did you mean 'auc'"):
        metric("acu")
    with pytest.raises(ConfigError, match="unknown task 'detection'"):
        metrics_for("detection")
    with pytest.raises(ValueError, match="shown_in='report'"):
        metrics_for("classification", shown_in="report")


def test_tensorboard_tags_group_the_table_metrics():
    from medxfer.plugin_kit.tracking import metric_tag as scalar_tag

    assert scalar_tag("val_balanced_accuracy", "classification") == "val/balanced_accuracy"
    assert scalar_tag("val_dice", "segmentation") == "val/dice"
    assert scalar_tag("train_loss", "regression") == "train/loss"
    assert scalar_tag("train_L_new", "regression") == "train/L_new"
    assert scalar_tag("lr", "classification") == "lr"
