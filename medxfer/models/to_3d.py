"""2D -> 3D weight transfer: a 2D network, with its (ImageNet) weights, made to take volumes.

Three ways, chosen with ``model.backbone.to_3d``:

* ``acs`` -- ACS convolutions (Yang et al., "Reinventing 2D Convolutions for 3D Images",
  IEEE JBHI 2021): each 2D kernel is kept as it is and applied in one of the three
  orthogonal planes, a third of the output channels each (axial, coronal, sagittal). The
  weights keep their 2D shapes, so no parameter is added.
* ``i3d`` -- inflation (Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017):
  a ``k x k`` kernel becomes ``k x k x k``, its 2D weights repeated along depth and divided
  by ``k``. Depth is padded by repeating the edge slices, so a volume that is constant
  along depth gives, slice for slice, the 2D network's activations.
* ``2.5d`` -- the 2D network unchanged, run on every axial slice; the pooled slice features
  are averaged over depth (classifier backbones).

For ``acs`` and ``i3d`` the layers are swapped in place (:mod:`medxfer.models.layers_3d`),
so the network keeps its parameter names and layer groups, and the 2D-only functions a
``forward`` calls get their 3D meaning while it runs (:mod:`medxfer.models.functional_3d`).
A network that still fails on a volume is refused when it is built (:func:`check_converted`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from medxfer.errors import ConfigError
from medxfer.models.backbone import Backbone
from medxfer.models.functional_3d import forward_in_3d, run_in_3d
from medxfer.models.layers_3d import LAYER_METHODS, convert_layers
from medxfer.models.segmentation import SegmentationModel

#: The values of ``model.backbone.to_3d``.
TO_3D_METHODS = ("acs", "i3d", "2.5d")

class Converted3dBackbone(Backbone):
    """A 2D backbone whose layers were converted to 3D (``acs`` or ``i3d``).

    The body is the 2D body, changed in place: its parameter names and layer groups are
    the 2D backbone's. ``forward`` runs it with
    :class:`~medxfer.models.functional_3d.Functional3d`.
    """

    def __init__(self, backbone: Backbone, method: str) -> None:
        super().__init__(backbone.body, backbone.layer_groups(), backbone.feature_dim,
                         spatial_dims=3, in_channels=backbone.in_channels,
                         expects_imagenet_norm=backbone.expects_imagenet_norm,
                         load_report=backbone.load_report)
        self.to_3d = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_in_3d(self.to_3d, lambda: Backbone.forward(self, x))

    def extra_repr(self) -> str:
        return f"to_3d={self.to_3d!r}"


class SliceBackbone(Backbone):
    """2.5D: the 2D backbone, unchanged, on every axial slice of ``[N, C, D, H, W]``; the
    slices' pooled features are averaged over depth."""

    to_3d = "2.5d"

    def __init__(self, backbone: Backbone) -> None:
        super().__init__(backbone.body, backbone.layer_groups(), backbone.feature_dim,
                         spatial_dims=3, in_channels=backbone.in_channels,
                         expects_imagenet_norm=backbone.expects_imagenet_norm,
                         load_report=backbone.load_report)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"a 2.5d backbone takes [N, C, D, H, W] volumes, got shape "
                             f"{tuple(x.shape)}")
        n, c, d, h, w = x.shape
        slices = x.transpose(1, 2).reshape(n * d, c, h, w)
        features = Backbone.forward(self, slices)
        return features.view(n, d, -1).mean(1)

    def extra_repr(self) -> str:
        return "to_3d='2.5d'"


def backbone_to_3d(backbone: Backbone, method: str, *, name: str,
                   check_size: int = 1) -> Backbone:
    """The 3D backbone ``method`` makes of the 2D ``backbone`` (weights kept).

    Args:
        backbone: A 2D backbone as its plugin built it (with its weights).
        method: One of :data:`TO_3D_METHODS`.
        name: The backbone's registered name, for messages.
        check_size: The side of the cube :func:`check_converted` passes through it (the
            backbone's declared minimum input size).

    Raises:
        ConfigError: for an unknown method, a 3D backbone, or a network that does not
            take volumes once converted.
    """
    if method not in TO_3D_METHODS:
        raise ConfigError(f"model.backbone.to_3d: {method!r} is not one of "
                          f"{', '.join(TO_3D_METHODS)}")
    if backbone.spatial_dims != 2:
        raise ConfigError(f"model.backbone.to_3d: backbone {name!r} built a "
                          f"{backbone.spatial_dims}D network; to_3d converts 2D ones")
    if method == "2.5d":
        return SliceBackbone(backbone)
    convert_layers(backbone.body, method, backbone.layer_groups(), name=name)
    converted = Converted3dBackbone(backbone, method)
    check_converted(converted, backbone.in_channels, check_size, method=method, name=name)
    return converted


def check_converted(net: nn.Module, in_channels: int, size: int, *, method: str,
                    name: str, expected: Callable[[Any], bool] | None = None,
                    instead: str = "use to_3d: 2.5d, which takes any 2D backbone") -> None:
    """Pass a ``meta`` volume of side ``size`` through the converted ``net``.

    Nothing is computed or changed (parameters and buffers are swapped for ``meta`` copies
    for the call). A backbone must give ``[1, feature_dim]``; ``expected`` checks other
    outputs.

    Raises:
        ConfigError: naming the backbone and the error, when it fails.
    """
    params = {k: torch.empty_like(v, device="meta")
              for k, v in (*net.named_parameters(), *net.named_buffers())}
    volume = torch.empty(1, in_channels, size, size, size, device="meta")
    training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = torch.func.functional_call(net, params, (volume,), strict=False)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means the conversion does not fit
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"model.backbone.to_3d: {method}: backbone {name!r} does not take volumes once "
            f"converted ({type(exc).__name__}: {first}); {instead}") from None
    finally:
        net.train(training)
    ok = expected(out) if expected is not None else (
        isinstance(out, torch.Tensor) and tuple(out.shape) == (1, getattr(net, "feature_dim")))
    if not ok:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"model.backbone.to_3d: {method}: backbone {name!r} gives output {shape} on a "
            f"volume once converted, not its {getattr(net, 'feature_dim', '?')} features "
            f"(a layer after the pooling expects the 2D size); {instead}")



def segmentation_to_3d(model: SegmentationModel, method: str, *, name: str,
                       check_size: int) -> SegmentationModel:
    """The 3D segmentation network ``method`` makes of a 2D plugin's ``model``, in place.

    Every layer of the network (encoder and decoder) is converted and its ``forward`` (and
    the encoder's, which strategies call alone) runs with the 2D functions given their 3D
    meaning. Only ``acs`` and ``i3d``: a 2.5D segmentation network would give per-slice
    encoder features, which the strategies that compare features cannot use.

    Raises:
        ConfigError: for ``2.5d``, a 3D network, a layer with no 3D form (a transposed
            convolution) or a network whose ``forward`` does not take volumes (e.g. one
            that unpacks ``height, width`` of its feature maps).
    """
    if method not in LAYER_METHODS:
        raise ConfigError(
            f"model.backbone.to_3d: {method!r} is for classifier backbones; a segmentation "
            f"network ({name!r}) is converted with {' or '.join(LAYER_METHODS)}, or use a "
            "native 3D segmentation network")
    if model.spatial_dims != 2:
        raise ConfigError(f"model.backbone.to_3d: {name!r} built a {model.spatial_dims}D "
                          "network; to_3d converts 2D ones")
    instead = ("its forward works on 2D feature maps only; choose another segmentation "
               "network or a native 3D one (`medxfer plugins --kind backbone`)")
    convert_layers(model.net, method, model.encoder_groups, name=name, instead=instead)
    for module in (model.net, *model.encoder_path):
        forward_in_3d(module, method)
    model.spatial_dims = 3
    side = -(-check_size // model.size_divisor) * model.size_divisor
    check_converted(model.net, model.in_channels, side, method=method, name=name,
                    expected=lambda out: isinstance(out, torch.Tensor) and tuple(out.shape)
                    == (1, model.num_classes, side, side, side), instead=instead)
    return model
