"""Pretrained first-convolution weights adapted to another number of input channels."""

from __future__ import annotations

import math

import torch


def adapt_input_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt pretrained first-convolution weights ``[O, I, *k]`` to ``in_channels`` inputs.

    One channel gets the sum over the pretrained input channels (grey = R + G + B, as timm
    and segmentation-models-pytorch do); other counts repeat the channels cyclically and
    scale by ``I / in_channels`` so activations keep their magnitude. 2D weights go through
    timm's ``adapt_input_conv``; 3D weights get the same rule here.

    Args:
        weight: The pretrained convolution weight.
        in_channels: The channel count of the new model.

    Returns:
        The adapted weight, same dtype.
    """
    base = weight.shape[1]
    if in_channels == base:
        return weight
    if weight.ndim == 4:
        from timm.models import adapt_input_conv

        return adapt_input_conv(in_channels, weight, base_chans=base)
    dtype = weight.dtype
    w = weight.float()
    if in_channels == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        repeat = math.ceil(in_channels / base)
        w = w.repeat(1, repeat, *([1] * (w.ndim - 2)))[:, :in_channels] * (base / in_channels)
    return w.to(dtype)
