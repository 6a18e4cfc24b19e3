"""MONAI 3D networks: ``resnet10_3d``, ``resnet18_3d``, ``resnet50_3d``, ``densenet121_3d``.

They have no ImageNet weights; ``pretrained`` may be a local file such as MedicalNet's
``resnet_10_23dataset.pth`` (the defaults match MedicalNet's architecture: shortcut type
B, no bias in the downsampling convolution, a stride-2 first convolution), or an earlier
medxfer run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import medxfer
from medxfer.api import BackboneCapabilities

if TYPE_CHECKING:  # pragma: no cover
    from medxfer.api import Backbone

#: Registered name -> (MONAI builder, feature width).
RESNETS = {"resnet10_3d": ("resnet10", 512), "resnet18_3d": ("resnet18", 512),
           "resnet50_3d": ("resnet50", 2048)}
DENSENET_MIN_INPUT_SIZE = 29


def build_resnet_3d(variant: str, *, in_channels: int, spatial_dims: int, pretrained: object,
                    conv1_t_size: int = 7, conv1_t_stride: int = 2, shortcut_type: str = "B",
                    bias_downsample: bool = False, no_max_pool: bool = False) -> Backbone:
    """MONAI's 3D ResNet without its classifier.

    Layer groups: stem (conv1, bn1, act, maxpool), layer1, layer2, layer3, layer4.
    """
    from monai.networks import nets

    from medxfer.api import LayerGroup, assemble_backbone, require_spatial_dims

    require_spatial_dims(variant, spatial_dims, (3,))
    builder, width = RESNETS[variant]
    model = getattr(nets, builder)(
        spatial_dims=3, n_input_channels=in_channels, feed_forward=False,
        conv1_t_size=conv1_t_size, conv1_t_stride=conv1_t_stride, shortcut_type=shortcut_type,
        bias_downsample=bias_downsample, no_max_pool=no_max_pool)
    groups = [LayerGroup("stem", [model.conv1, model.bn1, model.act, model.maxpool])]
    groups += [LayerGroup(n, [getattr(model, n)]) for n in ("layer1", "layer2", "layer3",
                                                              "layer4")]
    return assemble_backbone(variant, model, groups, width, in_channels=in_channels,
                             spatial_dims=spatial_dims, pretrained=pretrained, imagenet=None,
                             input_convs=["conv1.weight"])


def _resnet_factory(variant: str) -> Callable[..., Backbone]:
    def factory(in_channels: int = 1, spatial_dims: int = 3, pretrained: object = "none",
                conv1_t_size: int = 7, conv1_t_stride: int = 2, shortcut_type: str = "B",
                bias_downsample: bool = False, no_max_pool: bool = False) -> Backbone:
        return build_resnet_3d(variant, in_channels=in_channels, spatial_dims=spatial_dims,
                               pretrained=pretrained, conv1_t_size=conv1_t_size,
                               conv1_t_stride=conv1_t_stride, shortcut_type=shortcut_type,
                               bias_downsample=bias_downsample, no_max_pool=no_max_pool)

    factory.__name__ = variant
    factory.__doc__ = (f"MONAI {RESNETS[variant][0]} (3D); pretrained from a local file "
                       "such as MedicalNet weights.")
    return factory


def densenet121_3d(in_channels: int = 1, spatial_dims: int = 3, pretrained: object = "none",
                   dropout_prob: float = 0.0) -> Backbone:
    """MONAI DenseNet-121 (3D, inputs of at least 29 voxels per side), 1024 features.

    Layer groups: stem (conv0, norm0, pool0), then each dense block with its transition,
    the last with the final norm.
    """
    from monai.networks.nets import DenseNet121
    from torch import nn

    from medxfer.api import assemble_backbone, require_spatial_dims
    from medxfer_plugins.backbones.densenet import densenet_layer_groups

    require_spatial_dims("densenet121_3d", spatial_dims, (3,))
    model = DenseNet121(spatial_dims=3, in_channels=in_channels, out_channels=1,
                        dropout_prob=dropout_prob)
    model.class_layers.out = nn.Identity()
    groups = densenet_layer_groups(model.features)
    return assemble_backbone("densenet121_3d", model, groups, 1024, in_channels=in_channels,
                             spatial_dims=spatial_dims, pretrained=pretrained, imagenet=None,
                             input_convs=["features.conv0.weight"],
                             min_input_size=DENSENET_MIN_INPUT_SIZE)


@medxfer.hookimpl
def medxfer_register_backbones(register):
    for variant, (builder, width) in RESNETS.items():
        register(variant, _resnet_factory(variant),
                 description=f"MONAI {builder}, {width} features; weights from a file such as "
                             "MedicalNet's",
                 capabilities=BackboneCapabilities(spatial_dims=(3,)))
    register("densenet121_3d", densenet121_3d,
             description="MONAI DenseNet-121, 1024 features; weights from a file",
             capabilities=BackboneCapabilities(spatial_dims=(3,),
                                               min_input_size=DENSENET_MIN_INPUT_SIZE))
