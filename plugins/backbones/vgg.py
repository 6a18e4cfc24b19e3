"""torchvision VGG's convolutional layers: ``vgg16`` and ``vgg16_bn`` (2D, ImageNet weights)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torchvision.models.vgg import cfgs, make_layers

import medxfer
from medxfer.models import Backbone
from medxfer.models.adapt import (
    LayerGroup,
    assemble_backbone,
    replace_input_conv,
    require_spatial_dims,
    torchvision_variant,
)
from medxfer.weights import torchvision_source

#: Registered name -> (torchvision config key, batch norm).
VARIANTS = {"vgg16": ("D", False), "vgg16_bn": ("D", True)}
#: Five max-pools halve the input five times.
MIN_INPUT_SIZE = 32


def build_vgg(variant: str, *, in_channels: int, spatial_dims: int, pretrained: object,
              weights: str) -> Backbone:
    """VGG's ``features`` only (the 120M-parameter classifier is never built).

    Layer groups: the five blocks, each ending in a max-pool.
    """
    require_spatial_dims(variant, spatial_dims, (2,))
    cfg, batch_norm = VARIANTS[variant]
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
    for variant in VARIANTS:
        register(variant, torchvision_variant(build_vgg, variant),
                 description=f"torchvision {variant} convolutions, 2D (>=32 px), ImageNet "
                             "weights, 512 features")
