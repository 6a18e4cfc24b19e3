"""Module surgery shared by backbone plugins: input channels, layer groups, input checks.

Built-in and third-party backbone plugins alike import these helpers from
:mod:`medxfer.api`, not from here.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from medxfer.errors import ConfigError, PluginError
from medxfer.models.backbone import Backbone
from medxfer.models.input_conv import adapt_input_conv_weight  # noqa: F401 - re-exported

# re-exported for old imports; it lives where registering a backbone needs no torch
from medxfer.plugin_kit.backbone_factories import torchvision_variant  # noqa: F401
from medxfer.weights import WeightsSource, load_pretrained


class LayerGroup(nn.ModuleList):
    """An ordered set of existing submodules that strategies treat as one unit.

    The group holds references to modules of a backbone's body (it does not copy them),
    so freezing ``group.parameters()`` freezes those layers of the body.

    Args:
        name: A short name for reports (``stem``, ``layer1``...).
        modules: The body's submodules that make up the group.
    """

    def __init__(self, name: str, modules: Iterable[nn.Module]) -> None:
        super().__init__(list(modules))
        self.name = name

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class ParameterGroup(nn.Module):
    """A layer group made of parameters rather than whole modules.

    For architectures whose natural groups cut across modules (a vision transformer's
    ``cls_token`` and ``pos_embed`` belong to the root module). The parameters are the
    body's own objects, registered here by reference.

    Args:
        name: A short name for reports.
        parameters: The body's parameters that make up the group.
    """

    def __init__(self, name: str, parameters: Iterable[nn.Parameter]) -> None:
        super().__init__()
        self.name = name
        self.params = nn.ParameterList(list(parameters))

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def require_spatial_dims(backbone: str, spatial_dims: int, supported: Sequence[int]) -> None:
    """Refuse a ``spatial_dims`` the backbone cannot build.

    A backbone registered with capabilities is refused by the registry before its factory
    runs, with the registered backbones that do build ``spatial_dims``-D networks; this is
    the factory's own guard for a direct call.

    Raises:
        ConfigError: naming the backbone and the dimensionalities it builds.
    """
    if spatial_dims in supported:
        return
    dims = " or ".join(f"{d}D" for d in supported)
    raise ConfigError(
        f"model.backbone: backbone {backbone!r} only builds {dims} networks, but the data is "
        f"{spatial_dims}D. `medxfer plugins --kind backbone` lists what each backbone builds."
    )


def replace_input_conv(model: nn.Module, path: str, in_channels: int) -> nn.Module:
    """Swap the convolution at ``path`` (dotted) for one taking ``in_channels`` inputs.

    Everything else about the convolution (kernel, stride, padding, bias...) is kept; the
    new weight is Kaiming-initialised. Nothing happens when the count already matches.

    Returns:
        The convolution now at ``path``.
    """
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, attr)
    if not isinstance(old, nn.modules.conv._ConvNd):  # noqa: SLF001 - the public base type
        raise PluginError(f"{path} is a {type(old).__name__}, not a convolution")
    if old.in_channels == in_channels:
        return old
    if old.groups != 1:
        raise PluginError(f"cannot change the input channels of grouped convolution {path}")
    new = type(old)(in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                    padding=old.padding, dilation=old.dilation, bias=old.bias is not None,
                    padding_mode=old.padding_mode)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    setattr(parent, attr, new)
    return new


def check_layer_groups(backbone: str, body: nn.Module, groups: Sequence[nn.Module]) -> None:
    """Check that every trainable parameter of ``body`` is in exactly one group.

    Raises:
        PluginError: naming the backbone and the first parameters left out, or in two
            groups, or not part of the body.
    """
    names = {id(p): n for n, p in body.named_parameters()}
    seen: dict[int, int] = {}
    for index, group in enumerate(groups):
        for p in group.parameters():
            if id(p) not in names:
                raise PluginError(f"backbone {backbone!r}: group {index} holds a parameter "
                                  "that is not part of the body")
            if id(p) in seen and seen[id(p)] != index:
                raise PluginError(f"backbone {backbone!r}: parameter {names[id(p)]!r} is in "
                                  f"groups {seen[id(p)]} and {index}")
            seen[id(p)] = index
    missing = [n for n, p in body.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise PluginError(f"backbone {backbone!r}: {len(missing)} parameter(s) belong to no "
                          f"layer group, e.g. {', '.join(missing[:3])}")


def require_min_input_size(body: nn.Module, backbone: str, min_size: int) -> None:
    """Make ``body`` refuse inputs smaller than ``min_size`` with a clear error.

    A forward pre-hook checks every spatial side, so the message names the backbone and
    the smallest size it takes instead of a shape error from deep inside torch.
    """

    def check(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]
        spatial = tuple(x.shape[2:])
        if spatial and min(spatial) < min_size:
            size = "x".join(str(s) for s in spatial)
            raise ConfigError(
                f"backbone {backbone!r} needs inputs of at least {min_size} pixels per side, "
                f"got {size}: resize the images (data.preprocess.image_size) or choose a backbone "
                "that takes smaller inputs (`medxfer plugins --kind backbone` lists each "
                "backbone's minimum)"
            )

    body.register_forward_pre_hook(check)


def assemble_backbone(name: str, body: nn.Module, groups: Sequence[nn.Module],
                      feature_dim: int, *, in_channels: int, spatial_dims: int,
                      pretrained: object, imagenet: WeightsSource | None = None,
                      input_convs: Sequence[str] = (),
                      key_map: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
                      | None = None,
                      min_input_size: int | None = None) -> Backbone:
    """Load the requested weights into ``body``, check its groups and wrap it.

    The last step of every backbone factory: weights come from
    :func:`medxfer.weights.load_pretrained`, the layer groups are checked with
    :func:`check_layer_groups`, and inputs smaller than ``min_input_size`` are refused.

    Args:
        name: The backbone's registered name.
        body: The feature extractor; its key names match the library's checkpoints.
        groups: Layer groups, input to output.
        feature_dim: Width of the pooled features.
        in_channels: Channels the body takes.
        spatial_dims: 2 or 3.
        pretrained: The config's ``pretrained`` value.
        imagenet: A :class:`medxfer.weights.WeightsSource`, or ``None``.
        input_convs: Weight keys of the input convolutions, adapted to ``in_channels``.
        key_map: Optional renaming of a library checkpoint's keys.
        min_input_size: Smallest spatial side the architecture takes.

    Returns:
        The :class:`medxfer.models.Backbone`.
    """
    report, imagenet_norm = load_pretrained(body, pretrained, backbone=name,
                                            imagenet=imagenet, input_convs=input_convs,
                                            key_map=key_map)
    check_layer_groups(name, body, groups)
    if min_input_size:
        require_min_input_size(body, name, min_input_size)
    return Backbone(body, groups, feature_dim, spatial_dims=spatial_dims,
                    in_channels=in_channels, expects_imagenet_norm=imagenet_norm,
                    load_report=report)
