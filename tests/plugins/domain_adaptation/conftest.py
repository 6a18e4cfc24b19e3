"""Tiny networks, source/target batches and a real trainer for the domain-adaptation tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from medxfer.config import RunConfig
from medxfer.training.amp import Precision
from medxfer.training.trainer import Trainer
from medxfer.models import (Backbone, SegmentationModel, TransferNetwork,
                            build_segmentation_network)
from medxfer.plugins import create_plugin_manager


def _layers(spatial_dims: int) -> tuple[type[nn.Module], type[nn.Module]]:
    if spatial_dims == 2:
        return nn.Conv2d, nn.BatchNorm2d
    return nn.Conv3d, nn.BatchNorm3d


def tiny_network(spatial_dims: int, *, seed: int = 0) -> TransferNetwork:
    """Two conv-BN-ReLU groups and a linear head (2 classes), 1 input channel."""
    torch.manual_seed(seed)
    conv, norm = _layers(spatial_dims)
    a = nn.Sequential(conv(1, 4, 3, padding=1), norm(4), nn.ReLU())
    b = nn.Sequential(conv(4, 6, 3, stride=2, padding=1), norm(6), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1),
                      nn.Flatten())
    backbone = Backbone(nn.Sequential(a, b), [a, b], feature_dim=6, spatial_dims=spatial_dims,
                        in_channels=1)
    return TransferNetwork(backbone, 2)


def tiny_segmentation(spatial_dims: int, *, seed: int = 0) -> nn.Module:
    """An encoder (conv-BN-ReLU) and a decoder (conv-BN-ReLU, 1x1 conv to 2 classes)."""
    torch.manual_seed(seed)
    conv, norm = _layers(spatial_dims)
    encoder = nn.Sequential(conv(1, 4, 3, padding=1), norm(4), nn.ReLU())
    decoder = nn.Sequential(conv(4, 4, 3, padding=1), norm(4), nn.ReLU(), conv(4, 2, 1))
    model = SegmentationModel(nn.Sequential(encoder, decoder), encoder_groups=[encoder],
                              encoder_path=[encoder], feature_dim=4, spatial_dims=spatial_dims,
                              in_channels=1, num_classes=2)
    return build_segmentation_network(model)


def batches(spatial_dims: int, count: int, *, shift: float = 0.0, scale: float = 1.0,
            seed: int = 1, segmentation: bool = False) -> list[dict[str, Any]]:
    """``count`` batches of 4 images (6x6 or 4x4x4), optionally shifted and scaled."""
    gen = torch.Generator().manual_seed(seed)
    shape = (4, 1, 6, 6) if spatial_dims == 2 else (4, 1, 4, 4, 4)
    out = []
    for _ in range(count):
        image = torch.randn(shape, generator=gen) * scale + shift
        label = (image > shift).long() if segmentation else \
            torch.randint(0, 2, (4,), generator=gen)
        out.append({"image": image, "label": label})
    return out


def make_trainer(run_dir: Path, model: nn.Module, plugin: object, *, spatial_dims: int,
                 segmentation: bool = False, epochs: int = 1, source_batches: int = 2,
                 target_batches: int = 3) -> Trainer:
    """A real trainer with ``plugin`` registered, tiny source data and shifted target data."""
    task = "segmentation" if segmentation else "classification"
    config = RunConfig.model_validate({"task": task, "train": {"epochs": epochs}})
    hooks = create_plugin_manager(load_entry_points=False)
    hooks.register(plugin, name="domain_adaptation")
    source = batches(spatial_dims, source_batches, segmentation=segmentation)
    target = [{"image": b["image"]} for b in batches(spatial_dims, target_batches, shift=2.0,
                                                     scale=3.0, seed=7,
                                                     segmentation=segmentation)]
    if segmentation:
        loss_fn = lambda out, y: nn.functional.cross_entropy(out, y[:, 0])  # noqa: E731
    else:
        loss_fn = nn.CrossEntropyLoss()

    def validate(net: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"val_loss": float(sum(loss_fn(net(b["image"]), b["label"]) for b in source))}

    return Trainer(config, model, hooks, torch.device("cpu"), Precision(None, "cpu"), run_dir,
                   source, validate, loss_fn, ("val_loss", "min"), target_loader=target,
                   draw_target_batches=getattr(plugin, "draws_target_batches", True),
                   progress=False)


@pytest.fixture
def target_images() -> torch.Tensor:
    """A batch of shifted 2D target images."""
    return batches(2, 1, shift=2.0, scale=3.0, seed=7)[0]["image"]
