"""MONAI segmentation networks: ``monai_unet``, ``dynunet``, ``segresnet``, ``swinunetr``,
``resnet_unet``; 2D and 3D.

Each factory builds a whole MONAI encoder-decoder and returns a
:class:`medxfer.models.SegmentationModel` naming its encoder: the layer groups (one per
encoder stage, input to output) and the modules that compute the deepest features.

``pretrained`` is ``"none"``, a weights file, or a medxfer run folder:

* a file or a segmentation run of the same network: every encoder tensor must fit; other
  tensors are copied where their shape matches, so the output layer of a run with another
  class count stays freshly initialised (it is listed as skipped in the load report);
* ``swinunetr`` and ``resnet_unet`` also take weights of their encoder alone: the Swin
  transformer's (keys as in MONAI's ``model_swinvit.pt``), or a MedicalNet ResNet file
  (``resnet_10_23dataset.pth``...; ``pretrained: medicalnet`` looks for it in the weights
  cache folders) or a 3D classification run with backbone ``resnet10_3d``/``resnet18_3d``/
  ``resnet50_3d``.

There are no ImageNet weights for these networks. Weights are never downloaded.
"""

from __future__ import annotations

import importlib.util
import math
from typing import TYPE_CHECKING, Sequence

import medxfer
from medxfer.api import BackboneCapabilities, ConfigError, PluginError, WeightFiles
from medxfer_plugins.backbones._segmentation_names import medicalnet_file_names

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from medxfer.api import SegmentationModel

RESNET_DEPTHS = (10, 18, 34, 50)


def monai_unet(in_channels: int = 1, spatial_dims: int = 3, num_classes: int = 2,
               pretrained: object = "none", channels: Sequence[int] = (16, 32, 64, 128, 256),
               strides: Sequence[int] = (2, 2, 2, 2), num_res_units: int = 2,
               dropout: float = 0.0) -> SegmentationModel:
    """MONAI ``UNet`` (residual units, instance norm), 2D or 3D.

    Layer groups: one per down block, the bottom block last; feature width ``channels[-1]``.
    Inputs: sides multiples of ``prod(strides)``, at least twice that (instance norm).
    """
    from monai.networks.layers import SkipConnection
    from monai.networks.nets import UNet
    from torch import nn

    from medxfer.api import LayerGroup, require_spatial_dims
    from medxfer_plugins.backbones._monai_build import build_monai, finish_network

    require_spatial_dims("monai_unet", spatial_dims, (2, 3))
    if len(channels) < 2 or len(strides) != len(channels) - 1:
        raise ConfigError(f"model.backbone.strides: 'monai_unet' needs one stride per channel "
                          f"count but the last ({len(channels) - 1}), got {len(strides)}")
    net = build_monai(
        "monai_unet", UNet, spatial_dims=spatial_dims, in_channels=in_channels,
        out_channels=num_classes, channels=tuple(channels), strides=tuple(strides),
        num_res_units=num_res_units, dropout=dropout)
    path, node = [], net.model  # Sequential(down, SkipConnection(next level), up), nested
    while isinstance(node, nn.Sequential) and len(node) > 1 \
            and isinstance(node[1], SkipConnection):
        path.append(node[0])
        node = node[1].submodule
    path.append(node)
    groups = [LayerGroup(f"down{i}", [m]) for i, m in enumerate(path[:-1])]
    groups.append(LayerGroup("bottom", [path[-1]]))
    divisor = math.prod(strides)
    return finish_network(
        "monai_unet", net, groups, path, channels[-1], spatial_dims=spatial_dims,
        in_channels=in_channels, num_classes=num_classes, pretrained=pretrained,
        size_divisor=divisor, two_deepest=True, input_modules=path[:1])


def dynunet(in_channels: int = 1, spatial_dims: int = 3, num_classes: int = 2,
            pretrained: object = "none", depth: int = 5, filters: int | Sequence[int] = 32,
            res_block: bool = False, dropout: float = 0.0) -> SegmentationModel:
    """MONAI ``DynUNet`` laid out as nnU-Net does, without deep supervision, 2D or 3D.

    ``depth`` resolution levels: 3x3(x3) kernels, stride 1 for the input block and 2 for
    every later block. ``filters`` is the first level's width, doubled per level up to 320
    (3D) or 512 (2D) as in nnU-Net, or one width per level.

    Layer groups: input_block, each downsample block, bottleneck. Inputs: sides multiples
    of ``2**(depth-1)``, at least twice that (instance norm).
    """
    from monai.networks.nets import DynUNet

    from medxfer.api import LayerGroup, require_spatial_dims
    from medxfer_plugins.backbones._monai_build import build_monai, finish_network

    require_spatial_dims("dynunet", spatial_dims, (2, 3))
    if depth < 3:
        raise ConfigError(f"model.backbone.depth: 'dynunet' needs a depth of 3 or more, "
                          f"got {depth}")
    if isinstance(filters, int):
        cap = 320 if spatial_dims == 3 else 512
        filters = [min(filters * 2 ** i, cap) for i in range(depth)]
    if len(filters) != depth:
        raise ConfigError(f"model.backbone.filters: 'dynunet' needs {depth} widths (one per "
                          f"level), got {len(filters)}")
    strides = [1] + [2] * (depth - 1)
    net = build_monai(
        "dynunet", DynUNet, spatial_dims=spatial_dims, in_channels=in_channels,
        out_channels=num_classes, kernel_size=[3] * depth, strides=strides,
        upsample_kernel_size=strides[1:], filters=list(filters), dropout=dropout or None,
        res_block=res_block, deep_supervision=False)
    path = [net.input_block, *net.downsamples, net.bottleneck]
    # DynUNet registers each block twice (as itself and inside ``skip_layers``); keep the
    # attributes but drop the aliases from the state dict, which safetensors refuses.
    for alias in ("input_block", "downsamples", "bottleneck", "upsamples"):
        module = net._modules.pop(alias)  # noqa: SLF001 - the registration, not the module
        object.__setattr__(net, alias, module)
    groups = [LayerGroup("input_block", [path[0]])]
    groups += [LayerGroup(f"downsamples.{i}", [m]) for i, m in enumerate(path[1:-1])]
    groups.append(LayerGroup("bottleneck", [path[-1]]))
    divisor = 2 ** (depth - 1)
    return finish_network(
        "dynunet", net, groups, path, filters[-1], spatial_dims=spatial_dims,
        in_channels=in_channels, num_classes=num_classes, pretrained=pretrained,
        size_divisor=divisor, two_deepest=True, input_modules=path[:1])


def segresnet(in_channels: int = 1, spatial_dims: int = 3, num_classes: int = 2,
              pretrained: object = "none", init_filters: int = 16,
              blocks_down: Sequence[int] = (1, 2, 2, 4), dropout: float = 0.0) -> SegmentationModel:
    """MONAI ``SegResNet`` (group norm, one residual block per decoder level), 2D or 3D.

    Layer groups: one per resolution level (convInit joins the first). Feature width
    ``init_filters * 2**(len(blocks_down)-1)``. Inputs: sides multiples of
    ``2**(len(blocks_down)-1)``.
    """
    from monai.networks.nets import SegResNet

    from medxfer.api import LayerGroup, require_spatial_dims
    from medxfer_plugins.backbones._monai_build import build_monai, finish_network

    require_spatial_dims("segresnet", spatial_dims, (2, 3))
    if init_filters % 8:
        raise ConfigError(f"model.backbone.init_filters: 'segresnet' uses group norm with 8 "
                          f"groups, so it needs a multiple of 8, got {init_filters}")
    levels = len(blocks_down)
    net = build_monai(
        "segresnet", SegResNet, spatial_dims=spatial_dims, in_channels=in_channels,
        out_channels=num_classes, init_filters=init_filters, blocks_down=tuple(blocks_down),
        blocks_up=(1,) * (levels - 1), dropout_prob=dropout or None)
    stem = [net.convInit] + ([net.dropout] if dropout else [])
    path = [*stem, *net.down_layers]
    groups = [LayerGroup("level0", [*stem, net.down_layers[0]])]
    groups += [LayerGroup(f"level{i}", [m]) for i, m in enumerate(net.down_layers) if i]
    divisor = 2 ** (levels - 1)
    return finish_network(
        "segresnet", net, groups, path, init_filters * divisor, spatial_dims=spatial_dims,
        in_channels=in_channels, num_classes=num_classes, pretrained=pretrained,
        size_divisor=divisor, two_deepest=False, input_modules=[net.convInit])


def swinunetr(in_channels: int = 1, spatial_dims: int = 3, num_classes: int = 2,
              pretrained: object = "none", feature_size: int = 24,
              depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
              use_v2: bool = False, dropout: float = 0.0) -> SegmentationModel:
    """MONAI ``SwinUNETR``, 2D or 3D; needs the ``einops`` package.

    The encoder is the Swin transformer (``swinViT``); ``pretrained`` may also be its
    weights alone (MONAI's self-supervised ``model_swinvit.pt`` layout). Layer groups:
    patch_embed, then its four stages. Feature width ``16 * feature_size`` (a multiple of
    12). Inputs: sides multiples of 32 and at least 64 (instance norm at 1/32 scale).
    """
    from monai.networks.nets import SwinUNETR

    from medxfer.api import LayerGroup, require_spatial_dims
    from medxfer_plugins.backbones._monai_build import build_monai, finish_network

    require_spatial_dims("swinunetr", spatial_dims, (2, 3))
    if importlib.util.find_spec("einops") is None:
        raise PluginError("backbone 'swinunetr' needs the einops package: pip install einops")
    if len(depths) != 4 or len(num_heads) != 4:
        raise ConfigError("model.backbone.depths: 'swinunetr' has four stages: give four "
                          f"depths and four num_heads, got {list(depths)} and {list(num_heads)}")
    net = build_monai(
        "swinunetr", SwinUNETR, spatial_dims=spatial_dims, in_channels=in_channels,
        out_channels=num_classes, feature_size=feature_size, depths=tuple(depths),
        num_heads=tuple(num_heads), use_v2=use_v2, drop_rate=dropout)
    vit = net.swinViT
    groups = [LayerGroup("patch_embed", [vit.patch_embed])]
    for i in range(1, 5):
        stage = [getattr(vit, f"layers{i}c")] if use_v2 else []
        groups.append(LayerGroup(f"layers{i}", [*stage, getattr(vit, f"layers{i}")]))
    return finish_network(
        "swinunetr", net, groups, [vit], 16 * feature_size, spatial_dims=spatial_dims,
        in_channels=in_channels, num_classes=num_classes, pretrained=pretrained, size_divisor=32,
        two_deepest=True, input_modules=[vit.patch_embed, net.encoder1], encoder_prefix="swinViT.")


def _resnet_encoder(depth: int, spatial_dims: int, in_channels: int, shortcut_type: str,
                    bias_downsample: bool) -> nn.Module:
    """MONAI's ``ResNetFeatures`` with the shortcut settings given (FlexibleUNet fixes them)."""
    from monai.networks.nets import resnet as monai_resnet

    blocks, layers = monai_resnet.resnet_params[f"resnet{depth}"][:2]

    class Encoder(monai_resnet.ResNetFeatures):
        def __init__(self) -> None:  # ResNetFeatures' own __init__ takes MedicalNet's settings
            monai_resnet.ResNet.__init__(
                self, block=blocks, layers=layers, block_inplanes=monai_resnet.get_inplanes(),
                spatial_dims=spatial_dims, n_input_channels=in_channels, conv1_t_stride=2,
                shortcut_type=shortcut_type, feed_forward=False, bias_downsample=bias_downsample)

    return Encoder()


def resnet_unet(in_channels: int = 1, spatial_dims: int = 3, num_classes: int = 2,
                pretrained: object = "none", depth: int = 10,
                decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
                shortcut_type: str | None = None, bias_downsample: bool | None = None,
                dropout: float = 0.0) -> SegmentationModel:
    """MONAI ``FlexibleUNet`` with a ResNet-``depth`` encoder (10, 18, 34, 50), 2D or 3D.

    ``pretrained``: MedicalNet weights (a file such as ``resnet_10_23dataset.pth``, or
    ``medicalnet`` to find it in ``$MEDXFER_WEIGHTS_DIR`` or torch hub's checkpoints), a 3D
    classification run (``resnet10_3d``/``resnet18_3d``/``resnet50_3d``), or a file/run of
    this network. The encoder's shortcuts default to MedicalNet's (type B without bias for
    10 and 50, type A for 18 and 34); set ``shortcut_type`` (``bias_downsample`` then
    defaults to false, as in medxfer's 3D ResNets) to match another source.

    Layer groups: stem (conv1, bn1), layer1, layer2, layer3, layer4; feature width
    512 (2048 for 50). Inputs: sides multiples of 32 (at least 64 for batches of one in
    training: batch norm at 1/32 scale).
    """
    from monai.networks.nets import FlexibleUNet
    from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

    from medxfer.api import LayerGroup, require_spatial_dims
    from medxfer_plugins.backbones._monai_build import build_monai, finish_network

    require_spatial_dims("resnet_unet", spatial_dims, (2, 3))
    if depth not in RESNET_DEPTHS:
        raise ConfigError(f"model.backbone.depth: 'resnet_unet' takes a ResNet depth of "
                          f"{', '.join(map(str, RESNET_DEPTHS))}, got {depth}")
    if spatial_dims == 2 and str(pretrained).strip().lower() == "medicalnet":
        raise ConfigError("model.backbone.pretrained: MedicalNet weights are 3D; 'resnet_unet' "
                          "in 2D takes 'none' or weights of a 2D network")
    if len(decoder_channels) != 5:
        raise ConfigError("model.backbone.decoder_channels: 'resnet_unet' needs 5 widths, "
                          f"got {list(decoder_channels)}")
    net = build_monai(
        "resnet_unet", FlexibleUNet, in_channels=in_channels, out_channels=num_classes,
        backbone=f"resnet{depth}", pretrained=False, spatial_dims=spatial_dims,
        decoder_channels=tuple(decoder_channels), dropout=dropout)
    medicalnet_bias, medicalnet_shortcut = get_medicalnet_pretrained_resnet_args(depth)
    if shortcut_type is not None and shortcut_type.upper() not in ("A", "B"):
        raise ConfigError(f"model.backbone.shortcut_type: 'A' or 'B', got {shortcut_type!r}")
    shortcut = (shortcut_type or medicalnet_shortcut).upper()
    if bias_downsample is None:
        bias_downsample = medicalnet_bias if shortcut == medicalnet_shortcut else False
    if (shortcut, bias_downsample) != (medicalnet_shortcut, medicalnet_bias):
        net.encoder = _resnet_encoder(depth, spatial_dims, in_channels, shortcut, bias_downsample)
    enc = net.encoder
    groups = [LayerGroup("stem", [enc.conv1, enc.bn1]), LayerGroup("layer1", [enc.layer1])]
    groups += [LayerGroup(n, [getattr(enc, n)]) for n in ("layer2", "layer3", "layer4")]
    return finish_network(
        "resnet_unet", net, groups, [enc], 2048 if depth == 50 else 512, spatial_dims=spatial_dims,
        in_channels=in_channels, num_classes=num_classes, pretrained=pretrained, size_divisor=32,
        two_deepest=False, input_modules=[enc.conv1], encoder_prefix="encoder.",
        medicalnet_depth=depth)


#: Registered name -> (factory, description, smallest cube side, side multiple) with the
#: default options; the instance norm at the deepest scale of UNet, DynUNet and SwinUNETR
#: needs more than one value there, hence twice their multiple.
FACTORIES = {
    "monai_unet": (monai_unet, "MONAI UNet with residual units", 32, 16),
    "dynunet": (dynunet, "MONAI DynUNet laid out as nnU-Net", 32, 16),
    "segresnet": (segresnet, "MONAI SegResNet", 8, 8),
    "swinunetr": (swinunetr, "MONAI SwinUNETR (needs einops)", 64, 32),
    "resnet_unet": (resnet_unet, "MONAI FlexibleUNet with a ResNet encoder, MedicalNet "
                                 "weights", 32, 32),
}


@medxfer.hookimpl
def medxfer_register_backbones(register):
    for name, (factory, description, min_size, multiple) in FACTORIES.items():
        medicalnet = name == "resnet_unet"
        register(name, factory, description=description,
                 capabilities=BackboneCapabilities(
                     spatial_dims=(2, 3), min_input_size=min_size, input_multiple=multiple,
                     output="segmentation",
                     pretrained=("none", "file", "run") + (("medicalnet",) if medicalnet else ()),
                     weights={"medicalnet": WeightFiles(medicalnet_file_names(10))} if medicalnet
                     else {}))
