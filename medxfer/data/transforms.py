"""Deterministic preprocessing presets built from MONAI transforms (2D and 3D).

The chain for file-based cases is: read (with checks) -> orientation (3D) -> spacing ->
intensity normalisation -> crop/pad -> resize -> plain tensors. Its output is cacheable.
After caching (and after augmentation in training) :class:`AdaptChannels` turns grey
into 3 channels when asked and applies ImageNet mean/std.

Intensity ``auto`` picks by source: 8-bit 2D images and MedMNIST are scaled to [0, 1];
CT volumes are windowed in HU (``ct_window``); other volumes (MR, unknown) get a
per-volume z-score, or a percentile scaling to [0, 1] when ImageNet normalisation follows.
"""

from __future__ import annotations

from typing import Any

import torch


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Grey input with ImageNet weights: backbones sum the RGB kernels, so use the mean stats.
IMAGENET_GREY_MEAN = 0.449
IMAGENET_GREY_STD = 0.226
#: Colour (RGB) to grey: ITU-R 601 luma weights (``channels: grey``, and a colour image
#: given to a model trained on grey ones).
GREY_WEIGHTS = (0.299, 0.587, 0.114)
#: Interpolation of the resampling to ``data.preprocess.spacing`` (MONAI ``Spacing``).
SPACING_MODE = "bilinear"
#: What each concrete intensity mode does (see :func:`normalise_intensity`).
INTENSITY_MODES = {
    "uint8": "x / 255",
    "zscore": "per image and channel: (x - mean) / std",
    "percentile": "per image and channel: the `percentiles` values map to 0 and 1, clipped",
    "ct_window": "the `ct_window` HU values map to 0 and 1, clipped",
    "minmax": "per image and channel: min and max map to 0 and 1",
    "none": "unchanged",
}


def imagenet_stats(channels: int) -> tuple[list[float], list[float]]:
    """Per-channel ImageNet mean and std for an input of ``channels`` channels: RGB's for
    three, the grey values (what summed RGB kernels expect) for any other count."""
    if channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [IMAGENET_GREY_MEAN] * channels, [IMAGENET_GREY_STD] * channels


def resolve_intensity(mode: str, *, modality: str | None, spatial_dims: int, dtype: str,
                      imagenet_norm: bool) -> str:
    """The concrete intensity mode for one image when the config says ``auto``.

    Args:
        mode: ``data.preprocess.intensity``.
        modality: ``CT``, ``MR`` or None.
        spatial_dims: 2 or 3.
        dtype: The image's stored dtype (``uint8`` 2D images are scaled by 1/255).
        imagenet_norm: ImageNet mean/std follows (then results should lie in [0, 1]).

    Returns:
        One of ``uint8``, ``zscore``, ``percentile``, ``ct_window``, ``minmax``, ``none``.
    """
    if mode != "auto":
        return mode
    if modality == "CT":
        return "ct_window"
    if spatial_dims == 2:
        return "uint8" if dtype == "uint8" else "percentile"
    return "percentile" if imagenet_norm else "zscore"


def normalise_intensity(image: torch.Tensor, mode: str, *, ct_window: list[float],
                        percentiles: list[float]) -> torch.Tensor:
    """Apply one concrete intensity mode (see :func:`resolve_intensity`) to ``[C, *spatial]``."""
    from monai.transforms import (NormalizeIntensity, ScaleIntensity, ScaleIntensityRange,
                                  ScaleIntensityRangePercentiles)

    image = image.float()
    if mode == "uint8":
        return image / 255.0
    if mode == "zscore":
        return NormalizeIntensity(channel_wise=True)(image)
    if mode == "percentile":
        lo, hi = percentiles
        return ScaleIntensityRangePercentiles(lo, hi, 0.0, 1.0, clip=True, channel_wise=True)(image)
    if mode == "ct_window":
        lo, hi = ct_window
        return ScaleIntensityRange(lo, hi, 0.0, 1.0, clip=True)(image)
    if mode == "minmax":
        return ScaleIntensity(0.0, 1.0, channel_wise=True)(image)
    return image


class AdaptChannels:
    """Channel handling and ImageNet normalisation, applied last (after augmentation).

    Args:
        channels: ``auto`` keeps the source's channels, ``rgb`` repeats grey to 3,
            ``grey`` averages colour to 1.
        imagenet_norm: Subtract ImageNet mean, divide by std (grey: 0.449 / 0.226).
    """

    def __init__(self, channels: str = "auto", imagenet_norm: bool = False) -> None:
        self.channels = channels
        self.imagenet_norm = imagenet_norm

    def out_channels(self, in_channels: int) -> int:
        """Channels of the output for an input with ``in_channels``."""
        if self.channels == "rgb":
            return 3 if in_channels in (1, 3) else in_channels
        if self.channels == "grey":
            return 1
        return in_channels

    def __call__(self, image: torch.Tensor, channel_dim: int = 0) -> torch.Tensor:
        """Adapt ``[C, *spatial]`` (or a batch ``[B, C, *spatial]`` with ``channel_dim=1``)."""
        c = image.shape[channel_dim]
        lead = image.shape[:channel_dim]
        trail = (1,) * (image.ndim - channel_dim - 1)
        if self.channels == "rgb" and c == 1:
            image = image.expand(*lead, 3, *image.shape[channel_dim + 1:])
        elif self.channels == "grey" and c == 3:
            w = torch.tensor(GREY_WEIGHTS, dtype=image.dtype, device=image.device)
            image = (image * w.view(3, *trail)).sum(channel_dim, keepdim=True)
        elif self.channels == "grey" and c != 1:
            image = image.mean(channel_dim, keepdim=True)
        if self.imagenet_norm:
            shape = (-1,) + trail
            like = {"dtype": image.dtype, "device": image.device}
            mean, std = imagenet_stats(image.shape[channel_dim])
            image = (image - torch.tensor(mean, **like).view(shape)) / \
                torch.tensor(std, **like).view(shape)
        return image.contiguous()


def interp_mode(spatial_dims: int) -> str:
    """Linear interpolation mode name for the dimensionality."""
    return "bilinear" if spatial_dims == 2 else "trilinear"


def resize_options(spatial_dims: int) -> dict[str, Any]:
    """The MONAI ``Resize`` options of the resize of images to ``data.preprocess.image_size``:
    linear interpolation, anti-aliased when shrinking (a Gaussian blur first, MONAI's
    default sigma ``(scale - 1) / 2`` along each shrunk axis)."""
    return {"mode": interp_mode(spatial_dims), "anti_aliasing": True}


def describe_steps(pre: Any, spatial_dims: int) -> dict[str, Any]:
    """How :func:`preprocess_transform` and :class:`AdaptChannels` treat a new image, for
    people who reproduce it without medxfer (``export.json``): the details that
    ``data.preprocess`` itself does not state, taken from the values the transforms use.

    Args:
        pre: ``data.preprocess`` as new images get it.
        spatial_dims: 2 or 3: the model's input dimensionality.
    """
    steps: dict[str, Any] = {
        "order": ["read", *(["orientation"] if spatial_dims == 3 and pre.orientation else []),
                  *(["spacing"] if pre.spacing else []), "intensity",
                  *(["crop"] if pre.crop_size else []), *(["resize"] if pre.image_size else []),
                  "channels", "imagenet_normalisation"],
        "read": "2D files with Pillow as [C, rows, columns] (palette, RGBA, CMYK and YCbCr "
                "images as RGB, alpha dropped; LA and 1-bit as grey); volumes as [C, i, j, k]",
        "intensity_modes": dict(INTENSITY_MODES),
        "channels": {"grey_to_rgb": "repeat the grey channel 3 times",
                     "rgb_to_grey": {"weights": list(GREY_WEIGHTS),
                                     "rule": "sum of R, G, B times the weights (ITU-R 601 luma)"},
                     "other_to_grey": "mean over channels",
                     "when": "channels: rgb or grey, and whenever an image's channels differ "
                             "from the model's (colour image, grey model: rgb_to_grey; grey "
                             "image, colour model: grey_to_rgb)"},
    }
    if pre.spacing:
        steps["spacing"] = {"function": "monai.transforms.Spacing", "pixdim": list(pre.spacing),
                            "mode": SPACING_MODE}
    if pre.crop_size:
        steps["crop"] = {"function": "monai.transforms.ResizeWithPadOrCrop",
                         "spatial_size": list(pre.crop_size),
                         "rule": "centre crop, or zero padding on both sides"}
    if pre.image_size:
        steps["resize"] = {"function": "monai.transforms.Resize",
                           "spatial_size": list(pre.image_size), **resize_options(spatial_dims),
                           "anti_aliasing_sigma": "(input size / output size - 1) / 2 along "
                                                  "each shrunk axis, 0 elsewhere",
                           "align_corners": False}
    return steps


def resize_tensor(image: torch.Tensor, size: list[int] | None) -> torch.Tensor:
    """Resize ``[C, *spatial]`` with (anti-aliased when shrinking 2D) linear interpolation."""
    if not size or list(image.shape[1:]) == list(size):
        return image
    import torch.nn.functional as F

    dims = image.ndim - 1
    shrink = any(s < t for s, t in zip(size, image.shape[1:]))
    out = F.interpolate(image[None], size=list(size), mode=interp_mode(dims),
                        align_corners=False, antialias=shrink and dims == 2)
    return out[0]
