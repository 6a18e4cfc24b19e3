"""``lenet``: LeNet-5, 2D and 3D, for any input of at least 12 pixels per side."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import medxfer
from medxfer.api import BackboneCapabilities, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from medxfer.api import Backbone

MIN_INPUT_SIZE = 12
_ACTIVATIONS = ("relu", "tanh")
_FEATURES = ("fc", "conv")


def lenet(in_channels: int = 1, spatial_dims: int = 2, pretrained: object = "none",
          activation: str = "relu", features: str = "fc") -> Backbone:
    """LeNet-5 (conv 6@5x5, pool, conv 16@5x5, pool, fc 120, fc 84).

    An adaptive average pool to 5x5 before the fully connected layers lets it take any
    input of at least 12 pixels per side (28x28 MNIST-like images give the original).

    ``features: fc`` (the default) keeps the two fully connected layers in the backbone:
    84 features, layer groups conv1, conv2, fc, so feature extraction freezes them too.
    ``features: conv`` ends the backbone at the pooled convolutions (16 x 5 x 5 = 400
    features in 2D, 2000 in 3D; groups conv1, conv2): feature extraction then freezes the
    convolutions only, the classic use, and ``model.head.hidden: [120, 84]`` gives the
    new head LeNet's own fully connected layers. Either loads the convolutions of a run
    made with the other; ``fc`` needs a source that has its fully connected layers.

    Args:
        in_channels: Input channels.
        spatial_dims: 2 or 3.
        pretrained: ``none``, a weights file or a run folder.
        activation: ``relu`` or ``tanh`` (the original).
        features: ``fc`` or ``conv``: where the backbone ends (see above).
    """
    from torch import nn

    from medxfer.api import LayerGroup, assemble_backbone, require_spatial_dims

    require_spatial_dims("lenet", spatial_dims, (2, 3))
    if activation not in _ACTIVATIONS:
        raise ConfigError(f"model.backbone.activation: {activation!r} is not one of "
                          f"{', '.join(_ACTIVATIONS)}")
    if features not in _FEATURES:
        raise ConfigError(f"model.backbone.features: {features!r} is not one of "
                          f"{', '.join(_FEATURES)}")
    act = nn.ReLU if activation == "relu" else nn.Tanh
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
    adaptive = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
    flat = 16 * 5 ** spatial_dims
    layers = [("conv1", nn.Sequential(conv(in_channels, 6, 5, padding=2), act(), pool(2)))]
    if features == "fc":
        layers += [("conv2", nn.Sequential(conv(6, 16, 5), act(), pool(2))),
                   ("fc", nn.Sequential(adaptive(5), nn.Flatten(1), nn.Linear(flat, 120),
                                        act(), nn.Linear(120, 84), act()))]
    else:  # the same key names (conv2.0.*), so either kind loads the other's convolutions
        layers += [("conv2", nn.Sequential(conv(6, 16, 5), act(), pool(2), adaptive(5),
                                           nn.Flatten(1)))]
    body = nn.Sequential(OrderedDict(layers))
    groups = [LayerGroup(name, [m]) for name, m in body.named_children()]
    feature_dim = 84 if features == "fc" else flat
    return assemble_backbone("lenet", body, groups, feature_dim, in_channels=in_channels,
                             spatial_dims=spatial_dims, pretrained=pretrained, imagenet=None,
                             input_convs=["conv1.0.weight"], min_input_size=MIN_INPUT_SIZE)


@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("lenet", lenet, description="LeNet-5",
             capabilities=BackboneCapabilities(spatial_dims=(2, 3),
                                               min_input_size=MIN_INPUT_SIZE))
