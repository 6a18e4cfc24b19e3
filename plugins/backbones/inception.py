"""torchvision Inception networks: ``inception_v3`` and ``googlenet`` (2D, ImageNet weights)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import medxfer
from medxfer.api import BackboneCapabilities, WeightFiles

if TYPE_CHECKING:  # pragma: no cover
    from medxfer.api import Backbone

INCEPTION_V3_MIN_INPUT_SIZE = 75
GOOGLENET_MIN_INPUT_SIZE = 15
IMAGENET_FILES = {"inception_v3": "inception_v3_google-0cc3c7bd.pth",
                  "googlenet": "googlenet-1378be20.pth"}


def _transform_input(transform_input: bool | None, pretrained: object, in_channels: int) -> bool:
    # The ImageNet weights of both expect torchvision's input transform (ImageNet-normalised
    # RGB mapped to the original [-1, 1] scaling); it is defined for three channels only.
    if transform_input is None:
        return medxfer.wants_imagenet(pretrained) and in_channels == 3
    return transform_input and in_channels == 3


def inception_v3(in_channels: int = 3, spatial_dims: int = 2, pretrained: object = "imagenet",
                 weights: str = "IMAGENET1K_V1",
                 transform_input: bool | None = None) -> Backbone:
    """torchvision Inception-v3 (2D, inputs of at least 75 px), 2048 features.

    The auxiliary classifier is left out. Layer groups: stem (to the first max-pool),
    stem2 (to the second), Mixed_5*, Mixed_6*, Mixed_7*. ``transform_input`` defaults to
    on for ImageNet weights with three channels, as torchvision does.
    """
    import torchvision
    from torch import nn

    from medxfer.api import (LayerGroup, assemble_backbone, replace_input_conv,
                             require_spatial_dims, torchvision_source, wants_imagenet)

    require_spatial_dims("inception_v3", spatial_dims, (2,))
    model = torchvision.models.inception_v3(
        weights=None, aux_logits=False, init_weights=not wants_imagenet(pretrained), dropout=0.0,
        transform_input=_transform_input(transform_input, pretrained, in_channels))
    model.fc = nn.Identity()
    replace_input_conv(model, "Conv2d_1a_3x3.conv", in_channels)
    m = model
    groups = [
        LayerGroup("stem", [m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, m.maxpool1]),
        LayerGroup("stem2", [m.Conv2d_3b_1x1, m.Conv2d_4a_3x3, m.maxpool2]),
        LayerGroup("mixed5", [m.Mixed_5b, m.Mixed_5c, m.Mixed_5d]),
        LayerGroup("mixed6", [m.Mixed_6a, m.Mixed_6b, m.Mixed_6c, m.Mixed_6d, m.Mixed_6e]),
        LayerGroup("mixed7", [m.Mixed_7a, m.Mixed_7b, m.Mixed_7c]),
    ]
    return assemble_backbone(
        "inception_v3", model, groups, 2048, in_channels=in_channels,
        spatial_dims=spatial_dims, pretrained=pretrained,
        imagenet=torchvision_source("inception_v3", "inception_v3", weights),
        input_convs=["Conv2d_1a_3x3.conv.weight"],
        min_input_size=INCEPTION_V3_MIN_INPUT_SIZE)


def googlenet(in_channels: int = 3, spatial_dims: int = 2, pretrained: object = "imagenet",
              weights: str = "IMAGENET1K_V1", transform_input: bool | None = None) -> Backbone:
    """torchvision GoogLeNet (Inception-v1; 2D, inputs of at least 15 px), 1024 features.

    The auxiliary classifiers are left out. Layer groups: stem (conv1 to maxpool2),
    inception3, inception4, inception5.
    """
    import torchvision
    from torch import nn

    from medxfer.api import (LayerGroup, assemble_backbone, replace_input_conv,
                             require_spatial_dims, torchvision_source)

    require_spatial_dims("googlenet", spatial_dims, (2,))
    model = torchvision.models.googlenet(
        weights=None, aux_logits=False, init_weights=True, dropout=0.0,
        transform_input=_transform_input(transform_input, pretrained, in_channels))
    model.fc = nn.Identity()
    replace_input_conv(model, "conv1.conv", in_channels)
    m = model
    groups = [
        LayerGroup("stem", [m.conv1, m.maxpool1, m.conv2, m.conv3, m.maxpool2]),
        LayerGroup("inception3", [m.inception3a, m.inception3b, m.maxpool3]),
        LayerGroup("inception4", [m.inception4a, m.inception4b, m.inception4c,
                                  m.inception4d, m.inception4e, m.maxpool4]),
        LayerGroup("inception5", [m.inception5a, m.inception5b]),
    ]
    return assemble_backbone(
        "googlenet", model, groups, 1024, in_channels=in_channels, spatial_dims=spatial_dims,
        pretrained=pretrained, imagenet=torchvision_source("googlenet", "googlenet", weights),
        input_convs=["conv1.conv.weight"], min_input_size=GOOGLENET_MIN_INPUT_SIZE)


@medxfer.hookimpl
def medxfer_register_backbones(register):
    for name, factory, min_size, description in (
            ("inception_v3", inception_v3, INCEPTION_V3_MIN_INPUT_SIZE,
             "torchvision Inception-v3, 2048 features"),
            ("googlenet", googlenet, GOOGLENET_MIN_INPUT_SIZE,
             "torchvision GoogLeNet, 1024 features")):
        register(name, factory, description=description,
                 capabilities=BackboneCapabilities(
                     spatial_dims=(2,), min_input_size=min_size,
                     pretrained=("imagenet", "none", "file", "run"),
                     weights={"imagenet": WeightFiles((IMAGENET_FILES[name],))}))
