"""torchvision DenseNet: ``densenet121`` (2D, ImageNet weights)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import medxfer
from medxfer.api import BackboneCapabilities, WeightFiles

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from medxfer.api import Backbone, LayerGroup

#: Four transitions and the stem's pooling shrink inputs 32-fold; 29 px is the least.
MIN_INPUT_SIZE = 29
IMAGENET_FILE = "densenet121-a639ec97.pth"

# torchvision's published DenseNet files use old names such as ``norm.1``; torchvision
# renames them the same way when it loads them.
_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def rename_old_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``denselayer1.norm.1.weight`` to ``denselayer1.norm1.weight``, as torchvision does."""
    renamed = {}
    for key, value in state.items():
        match = _OLD_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def densenet121(in_channels: int = 3, spatial_dims: int = 2, pretrained: object = "imagenet",
                weights: str = "IMAGENET1K_V1") -> Backbone:
    """torchvision DenseNet-121 (2D, inputs of at least 29 px), 1024 features.

    Layer groups: stem (conv0, norm0, pool0), then each dense block with the transition
    after it, the last with the final norm.
    """
    import torchvision
    from torch import nn

    from medxfer.api import (assemble_backbone, replace_input_conv, require_spatial_dims,
                             torchvision_source)

    require_spatial_dims("densenet121", spatial_dims, (2,))
    model = torchvision.models.densenet121(weights=None)
    model.classifier = nn.Identity()
    replace_input_conv(model, "features.conv0", in_channels)
    groups = densenet_layer_groups(model.features)
    return assemble_backbone(
        "densenet121", model, groups, 1024, in_channels=in_channels,
        spatial_dims=spatial_dims, pretrained=pretrained,
        imagenet=torchvision_source("densenet121", "densenet121", weights),
        input_convs=["features.conv0.weight"], key_map=rename_old_densenet_keys,
        min_input_size=MIN_INPUT_SIZE)


def densenet_layer_groups(f: nn.Module) -> list[LayerGroup]:
    """Stem, then one group per dense block with its transition (the last with the final
    norm). torchvision's and MONAI's DenseNet-121 name these layers alike."""
    from medxfer.api import LayerGroup

    return [LayerGroup("stem", [f.conv0, f.norm0, f.relu0, f.pool0]),
            LayerGroup("block1", [f.denseblock1, f.transition1]),
            LayerGroup("block2", [f.denseblock2, f.transition2]),
            LayerGroup("block3", [f.denseblock3, f.transition3]),
            LayerGroup("block4", [f.denseblock4, f.norm5])]


@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("densenet121", densenet121, description="torchvision DenseNet-121, 1024 features",
             capabilities=BackboneCapabilities(
                 spatial_dims=(2,), min_input_size=MIN_INPUT_SIZE,
                 pretrained=("imagenet", "none", "file", "run"),
                 weights={"imagenet": WeightFiles((IMAGENET_FILE,))}))
