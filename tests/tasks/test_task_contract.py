"""Every task behind the one Task interface: the same contract, tested over all of them."""

from __future__ import annotations

import ast
import typing
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medxfer.config import RunConfig, validate_config
from medxfer.errors import ConfigError
from medxfer.plugins import build_registries
from medxfer.tasks import TASKS, Task, get_task, label_kind, task_of
from medxfer.tasks.image_level import ImageLevelTask

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registries():
    return build_registries()


def test_the_registry_lists_every_task_the_config_accepts():
    accepted = typing.get_args(RunConfig.model_fields["task"].annotation)
    assert set(TASKS) == set(accepted)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_task_is_one_shared_instance_with_a_consistent_label_kind(name):
    task = get_task(name)
    assert isinstance(task, Task) and task is get_task(name) and task.name == name
    flags = [task.labels_are_classes, task.labels_are_values, task.labels_are_masks]
    assert flags.count(True) == 1, "exactly one label kind"
    assert label_kind(name) == task.label_kind
    assert task.has_classes == (not task.labels_are_values)
    assert task.output_channels(["a", "b", "c"]) == (1 if task.labels_are_values else 3)
    assert task_of(SimpleNamespace(task=name)) is task


def test_an_unknown_task_name_says_what_exists():
    with pytest.raises(ConfigError, match=r"did you mean 'segmentation'\?.*classification"):
        get_task("segmentaton")
    assert label_kind("unlabelled") is None and label_kind(None) is None


# A tiny network and batch per task: 2 classes, 1 channel, 2D.
CONFIGS = {
    "classification": {"task": "classification", "model": {"backbone": {"name": "basic_cnn"}}},
    "regression": {"task": "regression", "model": {"backbone": {"name": "basic_cnn"}}},
    "segmentation": {"task": "segmentation", "model": {"backbone": {"name": "unet"}},
                     "loss": {"name": "dice_ce"}},
}


def _batch_labels(task: Task, n: int, size: int) -> torch.Tensor:
    if task.labels_are_masks:
        return torch.randint(0, 2, (n, 1, size, size))
    if task.labels_are_values:
        return torch.randn(n)
    return torch.randint(0, 2, (n,))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_network_loss_and_backward_fit_together(name, registries):
    config = validate_config(CONFIGS[name])
    task = task_of(config)
    shape = SimpleNamespace(in_channels=1, spatial_dims=2, num_classes=2)
    model, backbone = task.build_network(config, registries, shape,
                                         {"pretrained": "none"} if name != "segmentation" else {})
    assert hasattr(backbone, "layer_groups") and list(model.layer_groups())
    images = torch.randn(2, 1, 32, 32)
    outputs, _ = model.forward_features(images)
    loss = task.loss(config, [0, 1], 2, torch.device("cpu"))(outputs, _batch_labels(task, 2, 32))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_backbone_of_the_other_kind_is_refused_naming_the_key(name, registries):
    other = "unet" if name != "segmentation" else "basic_cnn"
    config = validate_config({**CONFIGS[name], "model": {"backbone": {"name": other}}})
    shape = SimpleNamespace(in_channels=1, spatial_dims=2, num_classes=2)
    with pytest.raises(ConfigError, match="model.backbone.name"):
        task_of(config).build_network(config, registries, shape, {})


@pytest.mark.parametrize("name", [n for n in sorted(TASKS)
                                  if isinstance(get_task(n), ImageLevelTask)])
def test_image_level_scores_and_metrics(name):
    task = get_task(name)
    outputs = torch.tensor([[2.0, -1.0], [-1.0, 3.0], [0.5, 0.2], [-2.0, 1.0]])
    if task.labels_are_values:
        outputs = outputs[:, :1]
    scores = task.scores(outputs).numpy()
    targets = np.array([0, 1, 0, 1], dtype=np.float64)
    values = task.metrics(targets, scores)
    assert values["n"] == 4
    if task.labels_are_classes:
        assert np.allclose(scores.sum(axis=1), 1) and values["accuracy"] == 1.0
    else:
        assert scores.shape == (4,) and values["mae"] >= 0


def test_run_ensembles_are_refused_for_tasks_without_them():
    for name in TASKS:
        task = get_task(name)
        if not task.supports_run_ensembles:
            with pytest.raises(NotImplementedError, match=name):
                task.evaluate_run_ensemble([], None, {}, Path("."), torch.device("cpu"))


# -- the seam holds: the core asks the task object, it does not compare task names -------

#: Places outside medxfer/tasks/ allowed to compare a task name with a literal, and why.
ALLOWED = {
    "medxfer/config.py": "config validation (options that only one task takes)",
    "medxfer/weights.py": "reads the task recorded in a transfer source's JSON record",
}


def _task_name_comparisons(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            literals = {p.value for p in parts if isinstance(p, ast.Constant)}
            for p in parts:
                if isinstance(p, (ast.Tuple, ast.List, ast.Set)):
                    literals |= {e.value for e in p.elts if isinstance(e, ast.Constant)}
            if literals & set(TASKS):
                lines.append(node.lineno)
    return lines


def test_task_names_are_compared_only_in_the_tasks_and_config_validation():
    found = {}
    for path in sorted((REPO / "medxfer").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("medxfer/tasks/") or rel in ALLOWED:
            continue
        lines = _task_name_comparisons(path)
        if lines:
            found[rel] = lines
    assert not found, f"ask the task object (medxfer.tasks.task_of) instead: {found}"
