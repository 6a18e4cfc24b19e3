"""run_pipeline for segmentation: patches, losses, sliding-window validation, bad input.

A tiny segmentation plugin registered here keeps these tests independent of the
built-in networks (their own contract tests cover them).
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import medxfer
from medxfer.config import load_config
from medxfer.tasks import task_of
from medxfer.workflows.run import run_pipeline
from medxfer.errors import ConfigError
from medxfer.models import SegmentationModel

QUICK = ["task=segmentation", "train.epochs=2", "eval.bootstrap=20", "train.batch_size=4",
         "model.backbone.name=tiny_seg", "strategy.name=full_finetune"]


def tiny_seg(in_channels: int, spatial_dims: int, num_classes: int,
             pretrained: str = "none") -> SegmentationModel:
    """Two strided conv stages and a transposed-conv decoder (for tests)."""
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    up = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
    norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
    stem = nn.Sequential(conv(in_channels, 8, 3, padding=1), norm(8), nn.ReLU())
    down = nn.Sequential(conv(8, 16, 3, stride=2, padding=1), norm(16), nn.ReLU())
    net = nn.Sequential(stem, down, up(16, 8, 2, stride=2), conv(8, num_classes, 1))
    return SegmentationModel(net, encoder_groups=[stem, down], encoder_path=[stem, down],
                             feature_dim=16, spatial_dims=spatial_dims,
                             in_channels=in_channels, num_classes=num_classes,
                             size_divisor=2)


class _TinyPlugin:
    @medxfer.hookimpl
    def medxfer_register_backbones(self, register):
        register("tiny_seg", tiny_seg, description="test segmentation network")


@pytest.fixture(scope="module")
def registries():
    manager = medxfer.create_plugin_manager()
    manager.register(_TinyPlugin(), name="tests:tiny_seg")
    return medxfer.build_registries(manager)


@pytest.mark.slow
@pytest.mark.parametrize("augment_on", ["cpu", "batch"])
def test_3d_patch_training_on_sample_data(tmp_path, registries, augment_on):
    config = load_config(None, [*QUICK, "data.patch.size=[16,16,16]",
                                "data.patch.samples_per_case=2", "loss.name=dice_ce",
                                "data.augment.preset=standard", f"data.augment_on={augment_on}"])
    summary = run_pipeline(config, tmp_path / "run", registries=registries, progress=False)
    assert summary["task"] == "segmentation"
    assert len(summary["history"]) == 2
    assert 0.0 <= summary["history"][-1]["val_dice"] <= 1.0
    assert "dice" in summary["test"]
    assert (tmp_path / "run" / "per_case.csv").is_file()
    sidecar = json.loads((tmp_path / "run" / "model.json").read_text(encoding="utf-8"))
    assert sidecar["task"] == "segmentation" and sidecar["num_classes"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["feature_extraction", "gradual_unfreeze", "l2sp", "lwf"])
def test_strategies_act_on_the_encoder(tmp_path, registries, strategy):
    config = load_config(None, [*QUICK, "train.epochs=1", f"strategy.name={strategy}",
                                "data.patch.size=[16,16,16]", "data.limit=4"])
    summary = run_pipeline(config, tmp_path / "run", registries=registries, progress=False)
    assert summary["epochs_run"] == 1


@pytest.mark.parametrize("name", ["dice", "dice_ce", "dice_focal", "tversky", "ce"])
@pytest.mark.parametrize("include_background", [False, True])
def test_segmentation_losses(name, include_background):
    config = load_config(None, ["task=segmentation", f"loss.name={name}",
                                f"loss.include_background={str(include_background).lower()}"])
    loss_fn = task_of(config).loss(config, [], 3, torch.device("cpu"))
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 1, 8, 8))
    loss = loss_fn(logits, target)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and logits.grad is not None
    perfect = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 3, 1, 2).float() * 20
    assert float(loss_fn(perfect, target)) < float(loss.detach())


def test_classification_refuses_segmentation_loss():
    config = load_config(None, ["loss.name=dice"])
    with pytest.raises(ConfigError, match="loss.name"):
        task_of(config).loss(config, [0, 1], 2, torch.device("cpu"))


def test_classifier_backbone_refused_for_segmentation(tmp_path, registries):
    config = load_config(None, ["task=segmentation", "model.backbone.name=basic_cnn"])
    with pytest.raises(ConfigError, match="segmentation network"):
        run_pipeline(config, tmp_path / "run", registries=registries, progress=False)


def test_segmentation_plugin_refused_for_classification(tmp_path, registries):
    config = load_config(None, ["model.backbone.name=tiny_seg", "data.limit=8"])
    with pytest.raises(ConfigError, match="task: segmentation"):
        run_pipeline(config, tmp_path / "run", registries=registries, progress=False)


@pytest.mark.slow
def test_2d_network_on_slices_of_3d_volumes(tmp_path, registries):
    config = load_config(None, [*QUICK, "train.epochs=1", "data.slice_axis=2",
                                "data.patch.size=[16,16]", "data.limit=4"])
    summary = run_pipeline(config, tmp_path / "run", registries=registries, progress=False)
    sidecar = json.loads((tmp_path / "run" / "model.json").read_text(encoding="utf-8"))
    assert sidecar["spatial_dims"] == 2
    assert 0.0 <= summary["history"][0]["val_dice"] <= 1.0
    # the report's case counts are volumes in every split, not training slices
    rows = (tmp_path / "run" / "splits.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert summary["splits"] == {s: sum(r.endswith(f",{s}") for r in rows)
                                 for s in ("train", "val", "test")}


def test_slice_axis_refused_for_2d_data(tmp_path, registries, repo_root):
    from medxfer.errors import DataError

    path = repo_root / "sample_data" / "segmentation_2d"
    config = load_config(None, [*QUICK, f"data.path={path}", "data.slice_axis=0"])
    with pytest.raises(DataError, match="slice_axis"):
        run_pipeline(config, tmp_path / "run", registries=registries, progress=False)


@pytest.mark.slow
def test_3d_training_in_channels_last_layout(tmp_path, registries, monkeypatch):
    """``train.channels_last`` lays 3D networks and batches out as ``channels_last_3d``."""
    from medxfer.training import trainer

    layouts = []
    original = trainer.to_channels_last

    def spy(images):
        out = original(images)
        layouts.append(out.is_contiguous(memory_format=torch.channels_last_3d))
        return out

    monkeypatch.setattr(trainer, "to_channels_last", spy)
    config = load_config(None, [*QUICK, "train.epochs=1", "data.patch.size=[16,16,16]",
                                "train.channels_last=true"])
    summary = run_pipeline(config, tmp_path / "run", registries=registries, progress=False)
    assert layouts and all(layouts)
    assert 0.0 <= summary["test"]["dice"] <= 1.0
