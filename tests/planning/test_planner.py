"""medxfer plan: rules, budget fitting and plan files, with an injected probe (no timing)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from medxfer.config import load_config
from medxfer.errors import ConfigError, DataError
from medxfer.planning import make_plan, parse_budget
from medxfer.planning import rules as R
from medxfer.planning.fingerprint import Fingerprint
from medxfer.planning.plan import Plan
from medxfer.planning.probe import Probe
from medxfer.plugins import build_registries


@pytest.fixture(scope="module")
def registries():
    return build_registries()


def fixed_probe(step: float, forward: float = 0.01):
    """A probe that measures ``step`` seconds per training step of 28 x 28 inputs, and time
    in proportion to the pixels for other sizes."""
    calls = []

    def probe(config, registries, *, in_channels, num_classes, input_size, batch_size):
        calls.append(list(input_size))
        scale = 1.0
        for side in input_size:
            scale *= side / 28
        return Probe(step * scale, forward * scale, batch_size, list(input_size), "cpu")

    probe.calls = calls
    return probe


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("90s", 90), ("1h", 3600),
                                               ("1h30m", 5400), (120, 120), ("2.5m", 150)])
def test_budgets_are_read_in_every_usual_form(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "15x", "30s"])
def test_a_bad_or_tiny_budget_is_refused_with_what_to_write(text):
    with pytest.raises(ConfigError, match="--budget"):
        parse_budget(text)


def test_a_plan_is_a_valid_config_with_a_reason_for_every_choice(repo_root, registries,
                                                                  tmp_path):
    data = repo_root / "sample_data" / "classification"
    plan = make_plan(data, budget=600, registries=registries, probe=fixed_probe(0.05))
    config = plan.run_config()
    assert config.task == "classification"
    assert config.train.time_limit and config.train.time_limit < 600
    assert all(reason.strip() for reason in plan.reasons.values())
    assert {"task", "model.backbone", "train.epochs", "eval.threshold",
            "data.preprocess.intensity"} <= set(plan.reasons)
    path = tmp_path / "plan.yaml"
    path.write_text(plan.to_yaml())
    text = path.read_text()
    assert "# the labels are one of" in text and "budget_seconds: 600" in text
    assert load_config(path).model_dump() == config.model_dump()


def test_small_images_are_upsampled_when_the_budget_allows(repo_root, registries, tmp_path):
    fast = make_plan(_medmnist_like(tmp_path), budget=900, registries=registries,
                     probe=fixed_probe(0.01))
    assert fast.get("data.preprocess.image_size") == [64, 64]
    slow = make_plan(_medmnist_like(tmp_path), budget=120, registries=registries,
                     probe=fixed_probe(0.5))
    assert slow.get("data.preprocess.image_size") is None  # the stored 28 px


def test_epochs_follow_the_measured_speed_and_the_budget(repo_root, registries):
    data = repo_root / "sample_data" / "classification"
    roomy = make_plan(data, budget=1800, registries=registries, probe=fixed_probe(0.01))
    tight = make_plan(data, budget=120, registries=registries, probe=fixed_probe(2.0))
    assert tight.get("train.epochs") < roomy.get("train.epochs") * max(
        roomy.get("ensemble.members", 1), 1) or tight.get("train.epochs") < 8
    assert "as many as the budget allows" in tight.reasons["train.epochs"]
    # the budget cut the rule's epochs: faster epochs may raise them back, never past it
    if tight.get("ensemble.members", 1) in (None, 1):
        assert tight.get("train.epochs") < tight.get("train.max_epochs")
    assert roomy.get("train.max_epochs") is None


def test_a_budget_too_short_for_one_epoch_says_how_long_is_needed(repo_root, registries):
    data = repo_root / "sample_data" / "classification"
    with pytest.raises(ConfigError, match=r"too short .* give at least \d+m"):
        make_plan(data, budget=60, registries=registries, probe=fixed_probe(30.0))


def test_few_cases_and_a_large_budget_give_a_deep_ensemble(repo_root, registries):
    data = repo_root / "sample_data" / "classification"
    plan = make_plan(data, budget=3600, registries=registries, probe=fixed_probe(0.01))
    assert plan.get("ensemble.members") == R.MAX_MEMBERS
    assert plan.get("ensemble.time_limit") == plan.get("train.time_limit")
    assert 1 <= plan.summary["estimate"]["members"] <= R.MAX_MEMBERS
    assert "deep ensemble" in plan.reasons["ensemble.members"]


def test_3d_masks_get_patches_windows_and_a_3d_unet(repo_root, registries):
    data = repo_root / "sample_data" / "segmentation_3d"
    plan = make_plan(data, budget=900, registries=registries, probe=fixed_probe(0.05))
    config = plan.run_config()
    assert config.task == "segmentation" and config.data.patch.size
    assert all(s % 16 == 0 for s in config.data.patch.size)
    assert config.eval.sliding_window.roi_size == config.data.patch.size
    assert config.model.backbone.name == "monai_unet" and config.loss.name == "dice_ce"


def test_masks_get_the_epochs_the_budget_allows_up_to_the_bound(repo_root, registries,
                                                               monkeypatch):
    # the sample set has 2 steps an epoch: a small step target stands for a large dataset
    monkeypatch.setitem(R.TARGET_STEPS, "mask", 8)
    data = repo_root / "sample_data" / "segmentation_3d"
    short = make_plan(data, budget=900, registries=registries, probe=fixed_probe(30.0))
    long = make_plan(data, budget=3600, registries=registries, probe=fixed_probe(30.0))
    capped = make_plan(data, budget=3600, registries=registries, probe=fixed_probe(1.0))
    lo, hi = R.EPOCH_BOUNDS["mask"]
    assert lo <= short.get("train.epochs") < long.get("train.epochs") < hi
    assert capped.get("train.epochs") == hi
    assert "as many epochs as the budget allows" in long.reasons["train.epochs"]
    # the epochs still fit in the time limit at the estimated pace
    estimate = long.summary["estimate"]
    assert estimate["training_seconds"] <= long.get("train.time_limit") * 1.01
    # the budget set the epochs: training may raise them up to the bound if it runs faster
    assert long.get("train.max_epochs") == hi
    assert "raises them to what fits, up to" in long.reasons["train.max_epochs"]
    assert capped.get("train.max_epochs") is None  # the bound itself was planned


def test_unlabelled_data_is_refused(tmp_path, registries):
    import numpy as np

    from tests.data.datafiles import write_png

    for i in range(3):
        write_png(tmp_path / f"img{i}.png", np.full((16, 16), 10 * i, dtype=np.uint8))
    with pytest.raises(DataError):
        make_plan(tmp_path, budget=600, registries=registries, probe=fixed_probe(0.01))


# -- rules on fingerprints -----------------------------------------------------------------


def fingerprint(**changes) -> Fingerprint:
    base = Fingerprint(path="/data", layout="folder", task="classification", spatial_dims=2,
                       channels=1, median_size=[128, 128], min_size=[128, 128],
                       max_size=[128, 128], median_spacing=[1.0, 1.0], dtypes={"uint8": 100},
                       modality=None, intensity={"p01": 0.0, "p99": 255.0},
                       cases={"train": 70, "val": 15, "test": 15},
                       train_classes={"a": 35, "b": 35}, class_names=["a", "b"],
                       json={"layout_reason": "class folders", "split_source": "folders"})
    return replace(base, **changes)


@pytest.mark.parametrize(("changes", "mode"), [
    ({}, "auto"),
    ({"modality": "CT", "spatial_dims": 3, "dtypes": {"int16": 10}}, "ct_window"),
    ({"spatial_dims": 3, "dtypes": {"int16": 5, "float32": 5},
      "intensity": {"p01": -1024.0, "p99": 900.0}}, "ct_window"),
    ({"modality": "MR", "spatial_dims": 3, "dtypes": {"float32": 10}}, "zscore"),
    ({"dtypes": {"uint16": 10}}, "percentile"),
])
def test_intensity_rule_by_what_the_images_are(changes, mode):
    assert R.intensity_rule(fingerprint(**changes))[0] == mode


@pytest.mark.parametrize(("counts", "rule"), [({"a": 50, "b": 50}, "val_accuracy_1se"),
                                              ({"a": 89, "b": 11}, "val_youden")])
def test_imbalance_picks_the_threshold_rule_and_the_headline(counts, rule):
    plan = Plan()
    R.plan_decision(plan, fingerprint(train_classes=counts))
    assert plan.get("eval.threshold") == rule
    assert plan.summary["headline"] == ("balanced_accuracy" if rule == "val_youden"
                                        else "accuracy")
    assert plan.get("train.early_stopping.metric") == "auc"


def test_anisotropic_volumes_are_segmented_as_slices_across_the_coarse_axis():
    from medxfer.planning.planner import plan_geometry

    fp = fingerprint(task="segmentation", spatial_dims=3, median_size=[200, 200, 30],
                     min_size=[180, 180, 20], max_size=[220, 220, 40],
                     median_spacing=[0.7, 0.7, 5.0], class_names=["background", "tumour"],
                     train_classes={}, foreground_fraction=0.02,
                     json={"spacing": {"min": [0.7, 0.7, 5.0], "max": [0.7, 0.7, 5.0]}})
    plan = Plan()
    assert plan_geometry(plan, fp, "cpu") == 2
    assert plan.get("data.slice_axis") == 2
    assert len(plan.get("data.patch.size")) == 2
    assert plan.get("data.patch.pos_fraction") == 0.7  # a small foreground


def _medmnist_like(tmp_path):
    """A small MedMNIST-format file of 28 px images (two classes)."""
    import numpy as np

    path = tmp_path / "tiny28.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        arrays = {}
        for split, n in (("train", 60), ("val", 20), ("test", 20)):
            arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
            arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
        np.savez(path, **arrays)
    return path
