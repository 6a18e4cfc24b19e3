"""``lenet``: LeNet-5, 2D and 3D, for any input of at least 12 pixels per side."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

import medxfer
from medxfer.errors import ConfigError
from medxfer.models import Backbone
from medxfer.models.adapt import LayerGroup, assemble_backbone, require_spatial_dims

MIN_INPUT_SIZE = 12
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def lenet(in_channels: int = 1, spatial_dims: int = 2, pretrained: object = "none",
          activation: str = "relu") -> Backbone:
    """LeNet-5 (conv 6@5x5, pool, conv 16@5x5, pool, fc 120, fc 84), 84 features.

    An adaptive average pool to 5x5 before the fully connected layers lets it take any
    input of at least 12 pixels per side (28x28 MNIST-like images give the original).
    Layer groups: conv1, conv2, fc.

    Args:
        in_channels: Input channels.
        spatial_dims: 2 or 3.
        pretrained: ``none``, a weights file or a run folder.
        activation: ``relu`` or ``tanh`` (the original).
    """
    require_spatial_dims("lenet", spatial_dims, (2, 3))
    if activation not in _ACTIVATIONS:
        raise ConfigError(f"model.backbone.activation: {activation!r} is not one of "
                          f"{', '.join(_ACTIVATIONS)}")
    act = _ACTIVATIONS[activation]
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
    adaptive = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
    body = nn.Sequential(OrderedDict([
        ("conv1", nn.Sequential(conv(in_channels, 6, 5, padding=2), act(), pool(2))),
        ("conv2", nn.Sequential(conv(6, 16, 5), act(), pool(2))),
        ("fc", nn.Sequential(adaptive(5), nn.Flatten(1), nn.Linear(16 * 5 ** spatial_dims, 120),
                             act(), nn.Linear(120, 84), act())),
    ]))
    groups = [LayerGroup(name, [m]) for name, m in body.named_children()]
    return assemble_backbone("lenet", body, groups, 84, in_channels=in_channels,
                             spatial_dims=spatial_dims, pretrained=pretrained, imagenet=None,
                             input_convs=["conv1.0.weight"], min_input_size=MIN_INPUT_SIZE)


@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("lenet", lenet, description="LeNet-5, 2D and 3D, inputs of at least 12 px")
