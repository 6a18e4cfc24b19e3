"""torchvision ResNets: ``resnet18`` and ``resnet50`` (2D, ImageNet weights)."""

from __future__ import annotations

from typing import Callable

import torchvision
from torch import nn

import medxfer
from medxfer.models import Backbone
from medxfer.models.adapt import (
    LayerGroup,
    assemble_backbone,
    replace_input_conv,
    require_spatial_dims,
)
from medxfer.weights import torchvision_source

#: Registered name -> pooled feature width.
VARIANTS = {"resnet18": 512, "resnet50": 2048}


def build_resnet(variant: str, *, in_channels: int, spatial_dims: int, pretrained: object,
                 weights: str) -> Backbone:
    """Build torchvision's ``variant`` without its classifier.

    Layer groups: stem (conv1, bn1, relu, maxpool), layer1, layer2, layer3, layer4.
    """
    require_spatial_dims(variant, spatial_dims, (2,))
    model = getattr(torchvision.models, variant)(weights=None)
    model.fc = nn.Identity()
    replace_input_conv(model, "conv1", in_channels)
    groups = [LayerGroup("stem", [model.conv1, model.bn1, model.relu, model.maxpool])]
    groups += [LayerGroup(n, [getattr(model, n)]) for n in ("layer1", "layer2", "layer3",
                                                              "layer4")]
    return assemble_backbone(
        variant, model, groups, VARIANTS[variant], in_channels=in_channels,
        spatial_dims=spatial_dims, pretrained=pretrained,
        imagenet=torchvision_source(variant, variant, weights), input_convs=["conv1.weight"])


def _factory(variant: str) -> Callable[..., Backbone]:
    def factory(in_channels: int = 3, spatial_dims: int = 2, pretrained: object = "imagenet",
                weights: str = "IMAGENET1K_V1") -> Backbone:
        return build_resnet(variant, in_channels=in_channels, spatial_dims=spatial_dims,
                            pretrained=pretrained, weights=weights)

    factory.__name__ = variant
    factory.__doc__ = (f"torchvision {variant} (2D); ``weights`` picks torchvision's "
                       "ImageNet weight set.")
    return factory


@medxfer.hookimpl
def medxfer_register_backbones(register):
    for variant, width in VARIANTS.items():
        register(variant, _factory(variant),
                 description=f"torchvision {variant}, 2D, ImageNet weights, {width} features")
