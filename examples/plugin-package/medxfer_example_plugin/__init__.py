"""A minimal third-party medxfer plugin: one backbone and one transfer strategy."""

from __future__ import annotations

from torch import nn

import medxfer
from medxfer.models import Backbone


def tiny_cnn(*, in_channels: int, spatial_dims: int, pretrained: str | None = None,
             width: int = 8) -> Backbone:
    """Two conv-ReLU-pool blocks; random initialisation only."""
    if pretrained not in (None, "none", False):
        raise medxfer.ConfigError("model.backbone.pretrained: tiny_cnn has no pretrained weights")
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
    block1 = nn.Sequential(conv(in_channels, width, 3, padding=1), nn.ReLU(), pool(2))
    block2 = nn.Sequential(conv(width, 2 * width, 3, padding=1), nn.ReLU())
    return Backbone(nn.Sequential(block1, block2), [block1, block2], 2 * width,
                    spatial_dims=spatial_dims, in_channels=in_channels)


class FreezeFirstGroup:
    """Freeze the backbone's first layer group; train everything else."""

    uses_pretrained = True

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx):
        for param in ctx.model.backbone.layer_groups()[0].parameters():
            param.requires_grad_(False)

    def describe(self) -> dict:
        return {"name": "freeze_first_group"}


@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("tiny_cnn", tiny_cnn, description="Two-block CNN from the example plugin")


@medxfer.hookimpl
def medxfer_register_strategies(register):
    register("freeze_first_group", FreezeFirstGroup,
             description="Freeze the first layer group (example plugin)")
