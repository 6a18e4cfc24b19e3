"""torchvision ResNets: ``resnet18`` and ``resnet50`` (2D, ImageNet weights)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import medxfer
from medxfer.api import BackboneCapabilities, WeightFiles, torchvision_variant

if TYPE_CHECKING:  # pragma: no cover
    from medxfer.api import Backbone

#: Registered name -> (pooled feature width, torchvision's ImageNet weights file).
VARIANTS = {"resnet18": (512, "resnet18-f37072fd.pth"),
            "resnet50": (2048, "resnet50-0676ba61.pth")}


def build_resnet(variant: str, *, in_channels: int, spatial_dims: int, pretrained: object,
                 weights: str) -> Backbone:
    """Build torchvision's ``variant`` without its classifier.

    Layer groups: stem (conv1, bn1, relu, maxpool), layer1, layer2, layer3, layer4.
    """
    import torchvision
    from torch import nn

    from medxfer.api import (LayerGroup, assemble_backbone, replace_input_conv,
                             require_spatial_dims, torchvision_source)

    require_spatial_dims(variant, spatial_dims, (2,))
    model = getattr(torchvision.models, variant)(weights=None)
    model.fc = nn.Identity()
    replace_input_conv(model, "conv1", in_channels)
    groups = [LayerGroup("stem", [model.conv1, model.bn1, model.relu, model.maxpool])]
    groups += [LayerGroup(n, [getattr(model, n)]) for n in ("layer1", "layer2", "layer3",
                                                              "layer4")]
    return assemble_backbone(
        variant, model, groups, VARIANTS[variant][0], in_channels=in_channels,
        spatial_dims=spatial_dims, pretrained=pretrained,
        imagenet=torchvision_source(variant, variant, weights), input_convs=["conv1.weight"])


@medxfer.hookimpl
def medxfer_register_backbones(register):
    for variant, (width, file_name) in VARIANTS.items():
        register(variant, torchvision_variant(build_resnet, variant),
                 description=f"torchvision {variant}, {width} features",
                 capabilities=BackboneCapabilities(
                     spatial_dims=(2,), pretrained=("imagenet", "none", "file", "run"),
                     weights={"imagenet": WeightFiles((file_name,))}))
