"""How the MONAI segmentation plugins finish their networks and load their weights.

Not an entry point: :mod:`medxfer_plugins.backbones.monai_segmentation` registers the
factories and imports this module when one is called, as it needs torch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from medxfer.api import (
    RUN_CHECKPOINTS,
    CheckpointError,
    ConfigError,
    InputSizeError,
    LayerGroup,
    LoadReport,
    SegmentationModel,
    WeightsError,
    adapt_input_conv_weight,
    check_layer_groups,
    find_run_checkpoint,
    is_no_weights,
    load_into,
    load_state_dict_file,
    sha256_of,
    wants_imagenet,
    weights_cache_dirs,
)
from medxfer_plugins.backbones._segmentation_names import medicalnet_file_names

MEDICALNET_URL = "https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet{depth}"


# ---------------------------------------------------------------------------------------
# Shared steps
# ---------------------------------------------------------------------------------------


def build_monai(name: str, build: Callable[..., nn.Module], **kwargs: Any) -> nn.Module:
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


def finish_network(name: str, net: nn.Module, groups: Sequence[LayerGroup],
                   path: Sequence[nn.Module], feature_dim: int, *, spatial_dims: int,
                   in_channels: int, num_classes: int, pretrained: object, size_divisor: int,
                   two_deepest: bool, input_modules: Sequence[nn.Module],
                   encoder_prefix: str | None = None,
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
    names = medicalnet_file_names(depth)
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
