"""A minimal third-party medxfer plugin: one backbone and one transfer strategy.

It imports from ``medxfer`` (the public API) only, and imports torch inside the backbone
factory, so that listing plugins does not load torch.
"""

from __future__ import annotations

import medxfer


def tiny_cnn(*, in_channels: int, spatial_dims: int, pretrained: str | None = None,
             width: int = 8) -> medxfer.Backbone:
    """Two conv-ReLU-pool blocks; random initialisation only."""
    from torch import nn

    if pretrained not in (None, "none", False):
        raise medxfer.ConfigError("model.backbone.pretrained: tiny_cnn has no pretrained weights")
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
    block1 = nn.Sequential(conv(in_channels, width, 3, padding=1), nn.ReLU(), pool(2))
    block2 = nn.Sequential(conv(width, 2 * width, 3, padding=1), nn.ReLU())
    return medxfer.Backbone(nn.Sequential(block1, block2), [block1, block2], 2 * width,
                            spatial_dims=spatial_dims, in_channels=in_channels)


class FreezeFirstGroup(medxfer.Strategy):
    """Freeze the backbone's first layer group; train everything else."""

    name = "freeze_first_group"
    keeps_pretrained = True  # the first group keeps its starting weights

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx: medxfer.FitContext) -> None:
        medxfer.freeze(ctx.model.backbone.layer_groups()[0])


@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("tiny_cnn", tiny_cnn, description="Two-block CNN from the example plugin",
             capabilities=medxfer.BackboneCapabilities(spatial_dims=(2, 3), min_input_size=2,
                                                       pretrained=("none",)))


@medxfer.hookimpl
def medxfer_register_strategies(register):
    register("freeze_first_group", FreezeFirstGroup,
             description="Freeze the first layer group (example plugin)")
