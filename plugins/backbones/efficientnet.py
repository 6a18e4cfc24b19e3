"""torchvision EfficientNet: ``efficientnet_b0`` (2D, ImageNet weights)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import medxfer
from medxfer.api import BackboneCapabilities, WeightFiles

if TYPE_CHECKING:  # pragma: no cover
    from medxfer.api import Backbone

# Stages of ``features`` grouped by resolution: stem+MBConv1, /4, /8, /16, /32 + head conv.
_BOUNDS = (0, 2, 3, 4, 6, 9)
IMAGENET_FILE = "efficientnet_b0_rwightman-7f5810bc.pth"


def efficientnet_b0(in_channels: int = 3, spatial_dims: int = 2,
                    pretrained: object = "imagenet",
                    weights: str = "IMAGENET1K_V1") -> Backbone:
    """torchvision EfficientNet-B0 (2D), 1280 features; groups are stages by resolution."""
    import torchvision
    from torch import nn

    from medxfer.api import (LayerGroup, assemble_backbone, replace_input_conv,
                             require_spatial_dims, torchvision_source)

    require_spatial_dims("efficientnet_b0", spatial_dims, (2,))
    model = torchvision.models.efficientnet_b0(weights=None)
    model.classifier = nn.Identity()
    replace_input_conv(model, "features.0.0", in_channels)
    groups = [LayerGroup(f"features[{a}:{b}]", list(model.features[a:b]))
              for a, b in zip(_BOUNDS, _BOUNDS[1:])]
    return assemble_backbone(
        "efficientnet_b0", model, groups, 1280, in_channels=in_channels,
        spatial_dims=spatial_dims, pretrained=pretrained,
        imagenet=torchvision_source("efficientnet_b0", "efficientnet_b0", weights),
        input_convs=["features.0.0.weight"])


@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("efficientnet_b0", efficientnet_b0,
             description="torchvision EfficientNet-B0, 1280 features",
             capabilities=BackboneCapabilities(
                 spatial_dims=(2,), pretrained=("imagenet", "none", "file", "run"),
                 weights={"imagenet": WeightFiles((IMAGENET_FILE,))}))
