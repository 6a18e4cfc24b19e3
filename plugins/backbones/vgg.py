"""torchvision VGG's convolutional layers: ``vgg16`` and ``vgg16_bn`` (2D, ImageNet weights)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import medxfer
from medxfer.api import BackboneCapabilities, WeightFiles, torchvision_variant

if TYPE_CHECKING:  # pragma: no cover
    from medxfer.api import Backbone

#: Registered name -> (torchvision config key, batch norm, ImageNet weights file).
VARIANTS = {"vgg16": ("D", False, "vgg16-397923af.pth"),
            "vgg16_bn": ("D", True, "vgg16_bn-6c64b313.pth")}
#: Five max-pools halve the input five times.
MIN_INPUT_SIZE = 32


def build_vgg(variant: str, *, in_channels: int, spatial_dims: int, pretrained: object,
              weights: str) -> Backbone:
    """VGG's ``features`` only (the 120M-parameter classifier is never built).

    Layer groups: the five blocks, each ending in a max-pool.
    """
    from collections import OrderedDict

    from torch import nn
    from torchvision.models.vgg import cfgs, make_layers

    from medxfer.api import (LayerGroup, assemble_backbone, replace_input_conv,
                             require_spatial_dims, torchvision_source)

    require_spatial_dims(variant, spatial_dims, (2,))
    cfg, batch_norm, _ = VARIANTS[variant]
    features = make_layers(cfgs[cfg], batch_norm=batch_norm)
    for m in features.modules():  # torchvision's VGG initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    body = nn.Sequential(OrderedDict(features=features))
    replace_input_conv(body, "features.0", in_channels)
    groups, start = [], 0
    for i, layer in enumerate(body.features):
        if isinstance(layer, nn.MaxPool2d):
            groups.append(LayerGroup(f"block{len(groups) + 1}", body.features[start:i + 1]))
            start = i + 1
    return assemble_backbone(
        variant, body, groups, 512, in_channels=in_channels, spatial_dims=spatial_dims,
        pretrained=pretrained, imagenet=torchvision_source(variant, variant, weights),
        input_convs=["features.0.weight"], min_input_size=MIN_INPUT_SIZE)


@medxfer.hookimpl
def medxfer_register_backbones(register):
    for variant, (_, _, file_name) in VARIANTS.items():
        register(variant, torchvision_variant(build_vgg, variant),
                 description=f"torchvision {variant} convolutions, 512 features",
                 capabilities=BackboneCapabilities(
                     spatial_dims=(2,), min_input_size=MIN_INPUT_SIZE,
                     pretrained=("imagenet", "none", "file", "run"),
                     weights={"imagenet": WeightFiles((file_name,))}))
