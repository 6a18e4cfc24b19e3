"""The layers of a 2D network in 3D: ACS convolutions and I3D inflation, and the 3D
counterparts of 2D pooling, normalisation, padding, dropout and upsampling layers.

:func:`convert_layers` swaps them into a built network in place (its parameter names and
layer groups stay), for :mod:`medxfer.models.to_3d`. Depth follows height: a 2D layer's
height settings (kernel, stride, padding, dilation) are used for depth too.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medxfer.errors import ConfigError
from medxfer.models.module_swap import swap_layers

#: Methods that convert the layers in place (``2.5d`` runs the 2D network on slices).
LAYER_METHODS = ("acs", "i3d")


def cube_size(value: Any) -> tuple[Any, Any, Any]:
    """A 2D size ``(h, w)`` (or one int) as 3D ``(h, h, w)``: depth follows height."""
    if isinstance(value, (tuple, list)):
        h, w = value
        return (h, h, w)
    return (value, value, value)


def output_length(length: int, kernel: int, padding: int, stride: int, dilation: int) -> int:
    """Output length of a convolution or pooling along one axis (PyTorch's formula)."""
    return (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _explicit_padding(conv: nn.Conv2d) -> tuple[int, int]:
    if not isinstance(conv.padding, str):
        return tuple(conv.padding)  # type: ignore[return-value]
    if conv.padding == "valid":
        return (0, 0)
    return tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))  # "same"


def _copy_flag(new: nn.Parameter, old: nn.Parameter | None) -> None:
    if old is not None:
        new.requires_grad_(old.requires_grad)


# ---------------------------------------------------------------------------------------
# Convolutions
# ---------------------------------------------------------------------------------------


class InflatedConv3d(nn.Conv3d):
    """I3D inflation of a ``Conv2d``: kernel ``(kh, kw)`` -> ``(kh, kh, kw)``, the 2D weights
    repeated along depth and divided by ``kh``; depth strides, pads and dilates as height.

    Depth padding repeats the edge slices (zero padding stays for height and width), so a
    volume constant along depth gives the 2D convolution's output on every slice.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        kh, kw = conv.kernel_size
        ph, pw = _explicit_padding(conv)
        zeros = conv.padding_mode == "zeros"  # else the 2D mode (reflect...) pads depth too
        self.depth_padding = ph if zeros else 0
        super().__init__(conv.in_channels, conv.out_channels, (kh, kh, kw),
                         stride=cube_size(conv.stride),
                         padding=(0, ph, pw) if zeros else (ph, ph, pw),
                         dilation=cube_size(conv.dilation), groups=conv.groups,
                         bias=conv.bias is not None, padding_mode=conv.padding_mode,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(conv.weight.unsqueeze(2).expand(-1, -1, kh, -1, -1) / kh)
            if self.bias is not None:
                self.bias.copy_(conv.bias)
        _copy_flag(self.weight, conv.weight)
        _copy_flag(self.bias, conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depth_padding:
            x = F.pad(x, (0, 0, 0, 0, self.depth_padding, self.depth_padding), mode="replicate")
        return super().forward(x)


class ACSConv(nn.Module):
    """ACS convolution of a ``Conv2d`` (Yang et al.): the 2D kernels, unchanged, split by
    output channel into three parts applied in the axial (height x width), coronal
    (depth x width) and sagittal (depth x height) planes; their outputs are concatenated.

    The output has the shape of a cubic 3D convolution (kernel ``(kh, kh, kw)``, depth
    strided and padded as height): along the axis a part's kernel is flat on, the input is
    sampled at the cube's kernel centres. A grouped convolution (e.g. depthwise) is split
    by whole groups.

    Args:
        conv: The 2D convolution; its weight and bias parameters are reused as they are.

    Raises:
        ConfigError: for padding modes other than zeros, or a non-square kernel whose
            sagittal part would not give the cube's output size.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ConfigError(f"model.backbone.to_3d: acs: a convolution with padding_mode "
                              f"{conv.padding_mode!r} cannot be converted; use to_3d: i3d")
        self.weight = conv.weight
        self.bias = conv.bias
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.groups = conv.groups
        kh, kw = conv.kernel_size
        ph, pw = _explicit_padding(conv)
        sh, sw = conv.stride
        dh, dw = conv.dilation
        # per axis (depth, height, width): kernel, padding, stride, dilation of the cube
        self.cube = ((kh, ph, sh, dh), (kh, ph, sh, dh), (kw, pw, sw, dw))
        if sh != sw or 2 * ph - dh * (kh - 1) != 2 * pw - dw * (kw - 1):
            raise ConfigError(
                f"model.backbone.to_3d: acs: a convolution with kernel {(kh, kw)}, stride "
                f"{(sh, sw)} and padding {(ph, pw)} gives different sizes in its sagittal "
                "part; ACS takes square kernels or stride-1 'same' ones. Use to_3d: i3d")
        self.parts = _acs_parts(self.out_channels, self.in_channels, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size="
                f"{tuple(a[0] for a in self.cube)}, stride={tuple(a[2] for a in self.cube)}, "
                f"groups={self.groups}, parts={[p[0] for p in self.parts]}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        target = [output_length(x.shape[2 + i], *self.cube[i]) for i in range(3)]
        outputs = []
        for flat, (o0, o1), (i0, i1), groups in self.parts:
            # the kernel's (height, width) axes lie on the other two spatial axes, in order;
            # the flat axis is sampled at the cube's kernel centres and strided
            first, second = (a for a in range(3) if a != flat)
            params = [(1, 0, self.cube[flat][2], 1)] * 3
            params[first], params[second] = self.cube[1], self.cube[2]
            part = x if (i0, i1) == (0, self.in_channels) else x[:, i0:i1]
            part = _sample_centres(part, flat, self.cube[flat], target[flat])
            outputs.append(F.conv3d(part, self.weight[o0:o1].unsqueeze(2 + flat), None,
                                    stride=tuple(p[2] for p in params),
                                    padding=tuple(p[1] for p in params),
                                    dilation=tuple(p[3] for p in params), groups=groups))
        out = torch.cat(outputs, 1) if len(outputs) > 1 else outputs[0]
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out


def _acs_parts(out_channels: int, in_channels: int, groups: int
               ) -> list[tuple[int, tuple[int, int], tuple[int, int], int]]:
    """``(flat axis, output channels, input channels, groups)`` of each non-empty part.

    Output channels are split in thirds (the first parts take the remainder), or, for a
    grouped convolution, whole groups are.
    """
    units = out_channels if groups == 1 else groups
    sizes = [units // 3 + (1 if i < units % 3 else 0) for i in range(3)]
    per_out = 1 if groups == 1 else out_channels // groups
    per_in = in_channels // groups
    parts, start = [], 0
    for axis, size in enumerate(sizes):
        if size:
            if groups == 1:
                parts.append((axis, (start, start + size), (0, in_channels), 1))
            else:
                parts.append((axis, (start * per_out, (start + size) * per_out),
                              (start * per_in, (start + size) * per_in), size))
        start += size
    return parts


def _sample_centres(x: torch.Tensor, axis: int, cube: tuple[int, int, int, int],
                    length: int) -> torch.Tensor:
    """``x`` along spatial ``axis`` cut to the centres of the cube's kernel windows, one
    every ``stride`` (the flat part then takes them with stride ``stride``)."""
    kernel, padding, stride, dilation = cube
    dim = 2 + axis
    if padding:
        pad = [0, 0] * 3
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = padding
        x = F.pad(x, pad)
    start = dilation * (kernel // 2)
    return x.narrow(dim, start, (length - 1) * stride + 1)


# ---------------------------------------------------------------------------------------
# Other layers
# ---------------------------------------------------------------------------------------


class ReplicateDepthAvgPool3d(nn.AvgPool3d):
    """``AvgPool3d`` whose depth padding repeats the edge slices (I3D's pooling)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool_3d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                           self.count_include_pad, self.divisor_override, replicate_depth=True)


def avg_pool_3d(x: torch.Tensor, kernel: Any, stride: Any, padding: Any, ceil_mode: bool,
                count_include_pad: bool, divisor_override: int | None, *,
                replicate_depth: bool) -> torch.Tensor:
    """``F.avg_pool3d`` with 2D or 3D settings; ``replicate_depth`` pads depth by repeating
    the edge slices instead of counting zeros (I3D: a depth-constant volume stays so)."""
    kernel, stride, padding = (triple(v) for v in (kernel, stride, padding))
    if replicate_depth and padding[0]:
        x = F.pad(x, (0, 0, 0, 0, padding[0], padding[0]), mode="replicate")
        padding = (0, padding[1], padding[2])
    if all(n >= k for n, k in zip(x.shape[2:], kernel)):
        return F.avg_pool3d(x, kernel, stride, padding, ceil_mode, count_include_pad,
                            divisor_override)
    # F.avg_pool3d refuses an axis shorter than its kernel even where the padding covers it
    # (F.avg_pool2d does not; Inception's last blocks pool 1x1 maps): pad with zeros here
    pad = [p for side in reversed(padding) for p in (side, side)]
    out = F.avg_pool3d(F.pad(x, pad), kernel, stride, 0, ceil_mode, True, divisor_override)
    if count_include_pad or divisor_override:
        return out
    inside = F.pad(torch.ones_like(x[:1, :1]), pad)
    return out / F.avg_pool3d(inside, kernel, stride, 0, ceil_mode, True)


def triple(value: Any) -> tuple[Any, Any, Any]:
    """A 3D setting: one value for every axis, a 3-tuple as it is, a 2D one as
    :func:`cube_size` makes it."""
    if isinstance(value, (tuple, list)):
        return tuple(value) if len(value) == 3 else cube_size(value)  # type: ignore[return-value]
    return (value, value, value)


def _norm_3d(norm: nn.Module, cls: type[nn.Module]) -> nn.Module:
    """A 3D norm layer holding the 2D one's own parameters and statistics."""
    new = cls(norm.num_features, eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
              track_running_stats=norm.track_running_stats)
    for name in ("weight", "bias"):
        setattr(new, name, getattr(norm, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        if getattr(norm, name, None) is not None:
            setattr(new, name, getattr(norm, name))
    new.train(norm.training)
    return new


def _pad_3d(pad: nn.Module) -> nn.Module:
    left, right, top, bottom = pad.padding
    padding = (left, right, top, bottom, top, bottom)
    if isinstance(pad, nn.ReflectionPad2d):
        return nn.ReflectionPad3d(padding)
    if isinstance(pad, nn.ReplicationPad2d):
        return nn.ReplicationPad3d(padding)
    return nn.ConstantPad3d(padding, pad.value)


def _upsample_3d(up: nn.Upsample) -> nn.Module:
    mode = {"bilinear": "trilinear", "bicubic": "trilinear"}.get(up.mode, up.mode)
    size = None if up.size is None else cube_size(up.size)
    scale = up.scale_factor
    if isinstance(scale, (tuple, list)):
        scale = cube_size(scale)
    return nn.Upsample(size=size, scale_factor=scale, mode=mode,
                       align_corners=up.align_corners if mode == "trilinear" else None)


def layer_converter(method: str) -> Callable[[nn.Module], nn.Module | None]:
    """The 3D replacement of one 2D layer for ``method`` (``acs`` or ``i3d``), or ``None``
    for a layer that works on volumes as it is (or holds layers to look into)."""
    i3d = method == "i3d"

    def convert(m: nn.Module) -> nn.Module | None:
        kind = type(m)
        if kind is nn.Conv2d:
            return InflatedConv3d(m) if i3d else ACSConv(m)
        if kind is nn.BatchNorm2d:
            return _norm_3d(m, nn.BatchNorm3d)
        if kind is nn.InstanceNorm2d:
            return _norm_3d(m, nn.InstanceNorm3d)
        if kind is nn.MaxPool2d:
            return nn.MaxPool3d(cube_size(m.kernel_size), cube_size(m.stride),
                                cube_size(m.padding), cube_size(m.dilation), m.return_indices,
                                m.ceil_mode)
        if kind is nn.AvgPool2d:
            pool = ReplicateDepthAvgPool3d if i3d else nn.AvgPool3d
            return pool(cube_size(m.kernel_size), cube_size(m.stride), cube_size(m.padding),
                        m.ceil_mode, m.count_include_pad, m.divisor_override)
        if kind is nn.AdaptiveAvgPool2d:
            return nn.AdaptiveAvgPool3d(cube_size(m.output_size))
        if kind is nn.AdaptiveMaxPool2d:
            return nn.AdaptiveMaxPool3d(cube_size(m.output_size), m.return_indices)
        if kind is nn.Dropout2d:
            return nn.Dropout3d(m.p, m.inplace)
        if kind in (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d):
            return _pad_3d(m)
        if kind is nn.UpsamplingBilinear2d:
            return nn.Upsample(scale_factor=m.scale_factor, size=None if m.size is None else
                               cube_size(m.size), mode="trilinear", align_corners=True)
        if kind in (nn.Upsample, nn.UpsamplingNearest2d):
            return _upsample_3d(m)
        return None

    return convert


#: 2D layer types; one left in a converted network (a subclass medxfer does not know how
#: to convert, e.g. a convolution with its own ``forward``) stops the conversion.
_TWO_D_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.InstanceNorm2d,
                 nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                 nn.Dropout2d, nn.LPPool2d, nn.FractionalMaxPool2d, nn.MaxUnpool2d,
                 nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
                 nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d, nn.PixelShuffle,
                 nn.LazyConv2d)


def convert_layers(net: nn.Module, method: str, groups: Sequence[nn.Module] = (), *,
                   name: str, instead: str = "use to_3d: 2.5d (slices through the 2D "
                   "network), which takes any 2D backbone") -> None:
    """Swap the 2D layers of ``net`` for ``method``'s 3D ones, in place (groups too).

    Args:
        net: The network to convert.
        method: ``acs`` or ``i3d``.
        groups: Its layer groups, kept in step.
        name: The backbone's registered name, for messages.
        instead: What the error tells the user to do instead.

    Raises:
        ConfigError: naming the backbone ``name`` and the first layers with no 3D form
            (a transposed convolution, a subclass of a 2D layer with its own ``forward``).
    """
    if method not in LAYER_METHODS:
        raise ValueError(f"convert_layers takes {' or '.join(LAYER_METHODS)}, not {method!r}")
    swap_layers(net, layer_converter(method), groups)
    left = [(path, type(m).__name__) for path, m in net.named_modules()
            if isinstance(m, _TWO_D_LAYERS)]
    if left:
        shown = ", ".join(f"{p or '(root)'} ({t})" for p, t in left[:3])
        raise ConfigError(
            f"model.backbone.to_3d: {method}: backbone {name!r} has {len(left)} 2D layer(s) "
            f"medxfer cannot convert, e.g. {shown}; {instead}")
