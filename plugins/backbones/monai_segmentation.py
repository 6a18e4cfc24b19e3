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
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

import medxfer
from medxfer.errors import (
    CheckpointError,
    ConfigError,
    InputSizeError,
    PluginError,
    WeightsError,
)
from medxfer.models import LoadReport, SegmentationModel
from medxfer.models.adapt import (
    LayerGroup,
    adapt_input_conv_weight,
    check_layer_groups,
    require_spatial_dims,
)
from medxfer.weights import (
    RUN_CHECKPOINTS,
    find_run_checkpoint,
    is_no_weights,
    load_into,
    load_state_dict_file,
    sha256_of,
    wants_imagenet,
    weights_cache_dirs,
)

RESNET_DEPTHS = (10, 18, 34, 50)
MEDICALNET_URL = "https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet{depth}"


# ---------------------------------------------------------------------------------------
# Shared steps
# ---------------------------------------------------------------------------------------


def _monai(name: str, build: Callable[..., nn.Module], **kwargs: Any) -> nn.Module:
    """Call a MONAI constructor; its ``ValueError`` for bad options becomes a ConfigError."""
    try:
        return build(**kwargs)
    except (ValueError, AssertionError) as exc:
        raise ConfigError(f"model.backbone: MONAI refused the options of {name!r}: {exc}") \
            from None


def _input_size_guard(name: str, size_divisor: int, two_deepest: bool) -> Callable[..., None]:
    """A forward pre-hook refusing sides that are not multiples of ``size_divisor``.

    With ``two_deepest`` (instance norm at the deepest scale, which needs more than one
    value) one side must also be at least twice the divisor. The :class:`InputSizeError`
    hints at the training patch; ``medxfer predict`` replaces the hint with its own.
    """

    def check(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        spatial = tuple(args[0].shape[2:])
        deepest = [s // size_divisor for s in spatial]
        if any(s % size_divisor for s in spatial) or min(deepest, default=1) < 1 \
                or (two_deepest and math.prod(deepest) < 2):
            size = "x".join(str(s) for s in spatial)
            least = f", one of them at least {2 * size_divisor}" if two_deepest else ""
            raise InputSizeError(
                f"backbone {name!r} takes inputs whose sides are multiples of {size_divisor}"
                f"{least}; got {size}",
                "change data.patch.size (or the image size) or make the network shallower")

    return check


def _input_conv_keys(net: nn.Module, modules: Sequence[nn.Module], in_channels: int) -> list[str]:
    """State-dict keys of the convolutions inside ``modules`` that read the input channels."""
    inside = {id(m) for top in modules for m in top.modules()}
    return [f"{name}.weight" for name, m in net.named_modules()
            if id(m) in inside and isinstance(m, nn.modules.conv._ConvNd)  # noqa: SLF001
            and not m.transposed and m.in_channels == in_channels]


def _finish(name: str, net: nn.Module, groups: Sequence[LayerGroup], path: Sequence[nn.Module],
            feature_dim: int, *, spatial_dims: int, in_channels: int, num_classes: int,
            pretrained: object, size_divisor: int, two_deepest: bool,
            input_modules: Sequence[nn.Module], encoder_prefix: str | None = None,
            medicalnet_depth: int | None = None) -> SegmentationModel:
    """Load the requested weights, check the groups and wrap the network."""
    check_layer_groups(name, nn.ModuleList(path), groups)
    report = load_weights(name, net, groups, pretrained,
                          input_convs=_input_conv_keys(net, input_modules, in_channels),
                          encoder_prefix=encoder_prefix, medicalnet_depth=medicalnet_depth)
    net.register_forward_pre_hook(_input_size_guard(name, size_divisor, two_deepest))
    return SegmentationModel(net, encoder_groups=groups, encoder_path=path,
                             feature_dim=feature_dim, spatial_dims=spatial_dims,
                             in_channels=in_channels, num_classes=num_classes,
                             load_report=report, size_divisor=size_divisor)


# ---------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------


def medicalnet_file(depth: int) -> Path:
    """The MedicalNet ResNet-``depth`` file in a weights cache folder (never downloaded).

    Raises:
        WeightsError: naming the file, where to download it and where to put it.
    """
    names = (f"resnet_{depth}_23dataset.pth", f"resnet_{depth}.pth")
    dirs = weights_cache_dirs()
    for folder in dirs:
        for file_name in names:
            if (folder / file_name).is_file():
                return folder / file_name
    raise WeightsError(
        f"no MedicalNet weights for resnet{depth} on this machine (medxfer never downloads "
        f"them). Download {names[0]} from {MEDICALNET_URL.format(depth=depth)} and set "
        "model.backbone.pretrained to its path, or place it in "
        f"{' or '.join(str(d) for d in dirs)}.")


def _read_weights(name: str, pretrained: object,
                  medicalnet_depth: int | None) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """``(tensors, source, sha256)`` from a file, a run folder or ``medicalnet``."""
    if wants_imagenet(pretrained):
        hint = " or MedicalNet weights ('medicalnet')" if medicalnet_depth else ""
        raise ConfigError(
            f"model.backbone.pretrained: backbone {name!r} has no ImageNet weights (there are "
            f"none for these MONAI networks); use 'none', a weights file{hint}, or a medxfer "
            "run folder")
    if medicalnet_depth and str(pretrained).strip().lower() == "medicalnet":
        pretrained = medicalnet_file(medicalnet_depth)
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ConfigError(f"model.backbone.pretrained: {pretrained!r} is not 'none' or a path")
    path = Path(pretrained).expanduser()
    if path.is_dir():
        ckpt = find_run_checkpoint(path)
        if ckpt is None:
            raise ConfigError(f"model.backbone.pretrained: folder {path} is not a medxfer run "
                              f"folder (it has none of {', '.join(RUN_CHECKPOINTS)})")
        return load_state_dict_file(ckpt, error=CheckpointError), f"run:{path}", None
    if not path.is_file():
        url = MEDICALNET_URL.format(depth=medicalnet_depth)
        download = f" Download the MedicalNet file ({url}) and pass its path." \
            if medicalnet_depth else ""
        raise WeightsError(f"model.backbone.pretrained: weights file {path} does not exist."
                           f"{download}")
    return load_state_dict_file(path), str(path), sha256_of(path)


def _net_keys(state: dict[str, torch.Tensor], name: str, target: dict[str, Any],
              encoder_prefix: str | None) -> tuple[dict[str, torch.Tensor], str]:
    """Rename a checkpoint's keys to the network's; returns them and the prefix added."""
    if all(k.startswith("net.") for k in state):  # a medxfer segmentation run
        return {k[len("net."):]: v for k, v in state.items()}, ""
    for prefix in ("backbone.body.", "backbone."):  # a medxfer classification run
        if any(k.startswith(prefix) for k in state):
            if encoder_prefix is None:
                raise WeightsError(f"model.backbone.pretrained holds a classifier backbone; "
                                   f"{name!r} takes weights of a whole {name} network")
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    if encoder_prefix and not any(k in target for k in state):  # the encoder alone
        return {encoder_prefix + k: v for k, v in state.items()}, encoder_prefix
    return state, ""


def load_weights(name: str, net: nn.Module, groups: Sequence[nn.Module], pretrained: object, *,
                 input_convs: Sequence[str] = (), encoder_prefix: str | None = None,
                 medicalnet_depth: int | None = None) -> LoadReport | None:
    """Fill ``net`` as ``pretrained`` asks; every encoder tensor must be loaded.

    Tensors outside the encoder are copied when name and shape match and skipped otherwise
    (an output layer for another class count). Input convolutions are adapted to the
    network's channels as for classifier backbones.

    Args:
        name: The plugin's name, for messages.
        net: The whole network.
        groups: Its encoder layer groups.
        pretrained: ``"none"``, a file, a run folder, or ``"medicalnet"`` (ResNet encoders).
        input_convs: Keys of convolution weights that read the input.
        encoder_prefix: Where the encoder sits in ``net`` when weights of the encoder alone
            are accepted (``"encoder."``), else ``None``.
        medicalnet_depth: The ResNet depth when MedicalNet weights fit the encoder.

    Returns:
        The :class:`LoadReport`, or ``None`` for random initialisation.

    Raises:
        ConfigError: for ``imagenet`` or a value that is neither a path nor ``none``.
        WeightsError, CheckpointError: for a missing or unreadable file, or weights whose
            encoder tensors are missing or misshapen.
    """
    if is_no_weights(pretrained):
        return None
    state, source, sha256 = _read_weights(name, pretrained, medicalnet_depth)
    target = net.state_dict(keep_vars=True)
    state, added = _net_keys(state, name, target, encoder_prefix)
    encoder_ids = {id(t) for g in groups for t in (*g.parameters(), *g.buffers())}
    encoder = {k for k, t in target.items() if id(t) in encoder_ids}
    for key in input_convs:
        if key in state and key in target and state[key].ndim == target[key].ndim:
            state[key] = adapt_input_conv_weight(state[key], target[key].shape[1])
    if medicalnet_depth is not None:
        _check_shortcuts(name, state, target)
    unmatched = sorted(k for k, v in state.items() if k in target and k not in encoder
                       and v.shape != target[k].shape)
    state = {k: v for k, v in state.items() if k not in unmatched}
    expected = [k for k in target if not k.endswith("num_batches_tracked")
                and (k in encoder or k in state)]
    report = load_into(net, state, expected=expected, source=source, sha256=sha256)
    report.skipped = sorted([k[len(added):] for k in report.skipped] + unmatched)
    return report


def _check_shortcuts(name: str, state: dict[str, torch.Tensor], target: dict[str, Any]) -> None:
    """Name the option to change when a ResNet's shortcut convolutions are not in ``net``."""
    extra = sorted(k for k in state if ".downsample." in k and k not in target
                   and f"{k.split('.downsample.')[0]}.conv1.weight" in target)
    if extra:
        raise WeightsError(
            f"model.backbone.pretrained: the weights have shortcut convolutions ({extra[0]}...) "
            f"that {name!r} lacks: they come from a ResNet with shortcut_type B; set "
            "shortcut_type: B (and bias_downsample as in that network) to match them")


# ---------------------------------------------------------------------------------------
# The networks
# ---------------------------------------------------------------------------------------


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

    require_spatial_dims("monai_unet", spatial_dims, (2, 3))
    if len(channels) < 2 or len(strides) != len(channels) - 1:
        raise ConfigError(f"model.backbone.strides: 'monai_unet' needs one stride per channel "
                          f"count but the last ({len(channels) - 1}), got {len(strides)}")
    net = _monai("monai_unet", UNet, spatial_dims=spatial_dims, in_channels=in_channels,
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
    return _finish("monai_unet", net, groups, path, channels[-1], spatial_dims=spatial_dims,
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
    net = _monai("dynunet", DynUNet, spatial_dims=spatial_dims, in_channels=in_channels,
                 out_channels=num_classes, kernel_size=[3] * depth, strides=strides,
                 upsample_kernel_size=strides[1:], filters=list(filters),
                 dropout=dropout or None, res_block=res_block, deep_supervision=False)
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
    return _finish("dynunet", net, groups, path, filters[-1], spatial_dims=spatial_dims,
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

    require_spatial_dims("segresnet", spatial_dims, (2, 3))
    if init_filters % 8:
        raise ConfigError(f"model.backbone.init_filters: 'segresnet' uses group norm with 8 "
                          f"groups, so it needs a multiple of 8, got {init_filters}")
    levels = len(blocks_down)
    net = _monai("segresnet", SegResNet, spatial_dims=spatial_dims, in_channels=in_channels,
                 out_channels=num_classes, init_filters=init_filters,
                 blocks_down=tuple(blocks_down), blocks_up=(1,) * (levels - 1),
                 dropout_prob=dropout or None)
    stem = [net.convInit] + ([net.dropout] if dropout else [])
    path = [*stem, *net.down_layers]
    groups = [LayerGroup("level0", [*stem, net.down_layers[0]])]
    groups += [LayerGroup(f"level{i}", [m]) for i, m in enumerate(net.down_layers) if i]
    divisor = 2 ** (levels - 1)
    return _finish("segresnet", net, groups, path, init_filters * divisor,
                   spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                   pretrained=pretrained, size_divisor=divisor, two_deepest=False,
                   input_modules=[net.convInit])


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

    require_spatial_dims("swinunetr", spatial_dims, (2, 3))
    if importlib.util.find_spec("einops") is None:
        raise PluginError("backbone 'swinunetr' needs the einops package: pip install einops")
    if len(depths) != 4 or len(num_heads) != 4:
        raise ConfigError("model.backbone.depths: 'swinunetr' has four stages: give four "
                          f"depths and four num_heads, got {list(depths)} and {list(num_heads)}")
    net = _monai("swinunetr", SwinUNETR, spatial_dims=spatial_dims, in_channels=in_channels,
                 out_channels=num_classes, feature_size=feature_size, depths=tuple(depths),
                 num_heads=tuple(num_heads), use_v2=use_v2, drop_rate=dropout)
    vit = net.swinViT
    groups = [LayerGroup("patch_embed", [vit.patch_embed])]
    for i in range(1, 5):
        stage = [getattr(vit, f"layers{i}c")] if use_v2 else []
        groups.append(LayerGroup(f"layers{i}", [*stage, getattr(vit, f"layers{i}")]))
    return _finish("swinunetr", net, groups, [vit], 16 * feature_size, spatial_dims=spatial_dims,
                   in_channels=in_channels, num_classes=num_classes, pretrained=pretrained,
                   size_divisor=32, two_deepest=True, input_modules=[vit.patch_embed, net.encoder1],
                   encoder_prefix="swinViT.")


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
    net = _monai("resnet_unet", FlexibleUNet, in_channels=in_channels, out_channels=num_classes,
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
    return _finish("resnet_unet", net, groups, [enc], 2048 if depth == 50 else 512,
                   spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                   pretrained=pretrained, size_divisor=32, two_deepest=False,
                   input_modules=[enc.conv1], encoder_prefix="encoder.", medicalnet_depth=depth)


FACTORIES = {
    "monai_unet": (monai_unet, "MONAI UNet with residual units"),
    "dynunet": (dynunet, "MONAI DynUNet laid out as nnU-Net"),
    "segresnet": (segresnet, "MONAI SegResNet"),
    "swinunetr": (swinunetr, "MONAI SwinUNETR (needs einops)"),
    "resnet_unet": (resnet_unet, "MONAI FlexibleUNet with a ResNet encoder, MedicalNet weights"),
}


@medxfer.hookimpl
def medxfer_register_backbones(register):
    for name, (factory, description) in FACTORIES.items():
        register(name, factory, description=f"{description}; segmentation, 2D or 3D")
