"""torchvision MobileNets: ``mobilenet_v2``, ``mobilenet_v3_small``, ``mobilenet_v3_large``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import medxfer
from medxfer.api import BackboneCapabilities, WeightFiles, torchvision_variant

if TYPE_CHECKING:  # pragma: no cover
    from medxfer.api import Backbone

#: Registered name -> (feature width, stage boundaries in ``features``).
VARIANTS: dict[str, tuple[int, tuple[int, ...]]] = {
    # Stages end where the resolution halves next: 16, 24, 32, 64/96, 160/320/1280 channels.
    "mobilenet_v2": (1280, (0, 2, 4, 7, 14, 19)),
    "mobilenet_v3_small": (576, (0, 2, 4, 9, 13)),
    "mobilenet_v3_large": (960, (0, 2, 4, 7, 13, 17)),
}
#: torchvision's ImageNet weights files (``IMAGENET1K_V1``).
WEIGHTS_FILES = {"mobilenet_v2": "mobilenet_v2-b0353104.pth",
                 "mobilenet_v3_small": "mobilenet_v3_small-047dcff4.pth",
                 "mobilenet_v3_large": "mobilenet_v3_large-8738ca79.pth"}


def build_mobilenet(variant: str, *, in_channels: int, spatial_dims: int, pretrained: object,
                    weights: str) -> Backbone:
    """Build torchvision's ``variant`` without its classifier.

    Layer groups are runs of ``features`` at one resolution, input to output.
    """
    import torchvision
    from torch import nn

    from medxfer.api import (LayerGroup, assemble_backbone, replace_input_conv,
                             require_spatial_dims, torchvision_source)

    require_spatial_dims(variant, spatial_dims, (2,))
    width, bounds = VARIANTS[variant]
    model = getattr(torchvision.models, variant)(weights=None)
    model.classifier = nn.Identity()
    replace_input_conv(model, "features.0.0", in_channels)
    groups = [LayerGroup(f"features[{a}:{b}]", list(model.features[a:b]))
              for a, b in zip(bounds, bounds[1:])]
    return assemble_backbone(
        variant, model, groups, width, in_channels=in_channels, spatial_dims=spatial_dims,
        pretrained=pretrained, imagenet=torchvision_source(variant, variant, weights),
        input_convs=["features.0.0.weight"])


@medxfer.hookimpl
def medxfer_register_backbones(register):
    for variant, (width, _) in VARIANTS.items():
        register(variant, torchvision_variant(build_mobilenet, variant),
                 description=f"torchvision {variant}, {width} features",
                 capabilities=BackboneCapabilities(
                     spatial_dims=(2,), pretrained=("imagenet", "none", "file", "run"),
                     weights={"imagenet": WeightFiles((WEIGHTS_FILES[variant],))}))
