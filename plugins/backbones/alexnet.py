"""torchvision AlexNet's convolutional layers: ``alexnet`` (2D, ImageNet weights)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import medxfer
from medxfer.api import BackboneCapabilities, WeightFiles

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from medxfer.api import Backbone

#: AlexNet's five convolutions take at least this many pixels per side.
MIN_INPUT_SIZE = 63
IMAGENET_FILE = "alexnet-owt-7be5be79.pth"


def alexnet_features(in_channels: int) -> nn.Sequential:
    """torchvision AlexNet's ``features`` (same layer indices, so its checkpoints load)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def alexnet(in_channels: int = 3, spatial_dims: int = 2, pretrained: object = "imagenet",
            weights: str = "IMAGENET1K_V1") -> Backbone:
    """torchvision AlexNet's convolutions (2D, inputs of at least 63 pixels), 256 features.

    The fully connected layers are left out (the core builds the head); their ImageNet
    tensors are reported as skipped. Layer groups: one per convolution.
    """
    from collections import OrderedDict

    from torch import nn

    from medxfer.api import (LayerGroup, assemble_backbone, replace_input_conv,
                             require_spatial_dims, torchvision_source)

    require_spatial_dims("alexnet", spatial_dims, (2,))
    body = nn.Sequential(OrderedDict(features=alexnet_features(3)))
    replace_input_conv(body, "features.0", in_channels)
    f = body.features
    groups = [LayerGroup("conv1", f[0:3]), LayerGroup("conv2", f[3:6]),
              LayerGroup("conv3", f[6:8]), LayerGroup("conv4", f[8:10]),
              LayerGroup("conv5", f[10:13])]
    return assemble_backbone(
        "alexnet", body, groups, 256, in_channels=in_channels, spatial_dims=spatial_dims,
        pretrained=pretrained, imagenet=torchvision_source("alexnet", "alexnet", weights),
        input_convs=["features.0.weight"], min_input_size=MIN_INPUT_SIZE)


@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("alexnet", alexnet, description="torchvision AlexNet convolutions, 256 features",
             capabilities=BackboneCapabilities(
                 spatial_dims=(2,), min_input_size=MIN_INPUT_SIZE,
                 pretrained=("imagenet", "none", "file", "run"),
                 weights={"imagenet": WeightFiles((IMAGENET_FILE,))}))
