"""``basic_cnn``: a baseline of conv-BN-ReLU-pool blocks, 2D and 3D, trained from scratch."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Sequence

import medxfer
from medxfer.api import BackboneCapabilities, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from medxfer.api import Backbone

#: The default four blocks halve the input three times.
DEFAULT_CHANNELS = (16, 32, 64, 128)


def conv_block(spatial_dims: int, in_ch: int, out_ch: int, kernel_size: int,
               pool: bool) -> nn.Sequential:
    """Convolution, batch norm, ReLU and (optionally) a 2x max-pool."""
    from torch import nn

    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
    layers = [("conv", conv(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False)),
              ("norm", norm(out_ch)), ("act", nn.ReLU(inplace=True))]
    if pool:
        layers.append(("pool", (nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d)(2)))
    return nn.Sequential(OrderedDict(layers))


def basic_cnn(in_channels: int = 1, spatial_dims: int = 2, pretrained: object = "none",
              channels: Sequence[int] = DEFAULT_CHANNELS, kernel_size: int = 3) -> Backbone:
    """A baseline CNN: one conv-BN-ReLU block per entry of ``channels``, 2D or 3D.

    Every block but the last halves the resolution, so inputs need
    ``2 ** (len(channels) - 1)`` pixels per side. One layer group per block. It has no
    ImageNet weights; ``pretrained`` may be a file or an earlier run.

    Args:
        in_channels: Input channels.
        spatial_dims: 2 or 3.
        pretrained: ``none``, a weights file or a run folder.
        channels: Output channels of each block; the last is the feature width.
        kernel_size: Odd convolution kernel size.
    """
    from torch import nn

    from medxfer.api import LayerGroup, assemble_backbone, require_spatial_dims

    require_spatial_dims("basic_cnn", spatial_dims, (2, 3))
    channels = [int(c) for c in channels]
    if not channels or min(channels) < 1:
        raise ConfigError("model.backbone.channels: give at least one positive channel count")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"model.backbone.kernel_size: must be odd, got {kernel_size}")
    blocks, prev = [], in_channels
    for i, ch in enumerate(channels):
        blocks.append((f"block{i + 1}", conv_block(spatial_dims, prev, ch, kernel_size,
                                                   pool=i < len(channels) - 1)))
        prev = ch
    body = nn.Sequential(OrderedDict(blocks))
    groups = [LayerGroup(name, [block]) for name, block in body.named_children()]
    return assemble_backbone("basic_cnn", body, groups, channels[-1], in_channels=in_channels,
                             spatial_dims=spatial_dims, pretrained=pretrained, imagenet=None,
                             input_convs=["block1.conv.weight"],
                             min_input_size=2 ** (len(channels) - 1))


@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("basic_cnn", basic_cnn,
             description="baseline conv-BN-ReLU-pool blocks, trained from scratch",
             capabilities=BackboneCapabilities(
                 spatial_dims=(2, 3), min_input_size=2 ** (len(DEFAULT_CHANNELS) - 1)))
