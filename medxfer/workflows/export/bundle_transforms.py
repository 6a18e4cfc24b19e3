"""medxfer's preprocessing written as MONAI bundle transform configs (``_target_`` dicts).

The chain mirrors :func:`medxfer.data.preprocess.preprocess_transform` followed by
:class:`medxfer.data.transforms.AdaptChannels`, step by step, with MONAI's own dictionary
transforms, so that a bundle preprocesses a file exactly as ``medxfer predict`` does.
``auto`` settings are resolved when exporting (they depend on the run's data).
"""

from __future__ import annotations

from typing import Any

from medxfer.data.loading import _dataset_hints
from medxfer.data.transforms import SPACING_MODE, imagenet_stats, resize_options, resolve_intensity
from medxfer.workflows.export.common import ExportError

KEY = "image"
LABEL = "label"


def resolved_intensity(loaded: Any) -> str:
    """The concrete intensity mode the run's images get (``auto`` resolved).

    2D images with ``auto`` are taken as 8-bit (PNG/JPEG): their intensities are divided by 255.
    """
    config, sidecar = loaded.config, loaded.sidecar
    pre = config.data.preprocess
    modality, medmnist = _dataset_hints(config)
    if medmnist and pre.intensity == "auto":
        return "uint8"
    dims = int(sidecar["spatial_dims"])
    return resolve_intensity(pre.intensity, modality=modality, spatial_dims=dims,
                             dtype="uint8" if dims == 2 else "",
                             imagenet_norm=bool(sidecar.get("imagenet_norm", False)))


def intensity_transform(mode: str, pre: Any) -> list[dict[str, Any]]:
    """The MONAI transform(s) of one concrete intensity mode."""
    if mode == "uint8":
        return [{"_target_": "ScaleIntensityRanged", "keys": KEY, "a_min": 0.0, "a_max": 255.0,
                 "b_min": 0.0, "b_max": 1.0, "clip": False}]
    if mode == "zscore":
        return [{"_target_": "NormalizeIntensityd", "keys": KEY, "channel_wise": True}]
    if mode == "percentile":
        lo, hi = pre.percentiles
        return [{"_target_": "ScaleIntensityRangePercentilesd", "keys": KEY, "lower": lo,
                 "upper": hi, "b_min": 0.0, "b_max": 1.0, "clip": True, "channel_wise": True}]
    if mode == "ct_window":
        lo, hi = pre.ct_window
        return [{"_target_": "ScaleIntensityRanged", "keys": KEY, "a_min": lo, "a_max": hi,
                 "b_min": 0.0, "b_max": 1.0, "clip": True}]
    if mode == "minmax":
        return [{"_target_": "ScaleIntensityd", "keys": KEY, "minv": 0.0, "maxv": 1.0,
                 "channel_wise": True}]
    return []


def _load(dims: int, channels: str, key: str = KEY) -> list[dict[str, Any]]:
    if dims == 3:
        return [{"_target_": "LoadImaged", "keys": key, "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": key}]
    # medxfer reads 2D images as (rows, columns): no axis reversal.
    load: dict[str, Any] = {"_target_": "LoadImaged", "keys": key, "image_only": True,
                            "reader": "PILReader", "reverse_indexing": False}
    if channels in ("rgb", "grey"):
        mode = "RGB" if channels == "rgb" else "L"
        load["converter"] = f"$lambda image: image.convert('{mode}')"
    return [load, {"_target_": "EnsureChannelFirstd", "keys": key}]


def refuse_slice_wise(loaded: Any) -> None:
    """Refuse a run that segments 3D volumes slice by slice, which a bundle cannot express.

    Raises:
        ExportError: naming ``data.slice_axis`` and the formats that work.
    """
    if loaded.config.data.slice_axis is not None:
        raise ExportError("--format monai-bundle: this run segments 3D volumes slice by slice "
                          "with a 2D network (data.slice_axis), which a bundle config cannot "
                          "express; use --format torchscript or onnx")


def preprocessing(loaded: Any, *, pad_to: int | None, mask: bool = False
                  ) -> list[dict[str, Any]]:
    """The bundle's preprocessing transforms for the run.

    Args:
        loaded: A run from :func:`medxfer.workflows.predict.load_run`.
        pad_to: Pad the end of every side to a multiple of this (whole-image inference of
            a network with a size divisor, as medxfer does), or None.
        mask: Also load the ``label`` mask file and give it every spatial step the image
            gets, with nearest-neighbour interpolation (segmentation training).

    Raises:
        ExportError: for a run that a bundle cannot reproduce (2D models on 3D slices).
    """
    refuse_slice_wise(loaded)
    config, sidecar = loaded.config, loaded.sidecar
    pre = config.data.preprocess
    dims = int(sidecar["spatial_dims"])
    keys: Any = [KEY, LABEL] if mask else KEY

    def per_key(image: Any, label: Any) -> Any:
        return [image, label] if mask else image

    steps = _load(dims, pre.channels)
    if mask:
        steps += _load(dims, "asis", LABEL)
    if dims == 3 and pre.orientation:
        steps.append({"_target_": "Orientationd", "keys": keys, "axcodes": pre.orientation,
                      "labels": None})
    if pre.spacing:
        steps.append({"_target_": "Spacingd", "keys": keys, "pixdim": list(pre.spacing),
                      "mode": per_key(SPACING_MODE, "nearest")})
    steps += intensity_transform(resolved_intensity(loaded), pre)
    if pre.crop_size:
        steps.append({"_target_": "ResizeWithPadOrCropd", "keys": keys,
                      "spatial_size": list(pre.crop_size)})
    if pre.image_size:
        options = resize_options(dims)
        steps.append({"_target_": "Resized", "keys": keys, "spatial_size": list(pre.image_size),
                      "mode": per_key(options["mode"], "nearest"),
                      "anti_aliasing": per_key(options["anti_aliasing"], False)})
    if dims == 3 and pre.channels == "rgb" and int(sidecar["in_channels"]) == 3:
        steps.append({"_target_": "RepeatChanneld", "keys": KEY, "repeats": 3})
    if sidecar.get("imagenet_norm"):
        mean, std = imagenet_stats(int(sidecar["in_channels"]))
        steps.append({"_target_": "NormalizeIntensityd", "keys": KEY, "subtrahend": mean,
                      "divisor": std, "channel_wise": True})
    if pad_to and pad_to > 1:
        steps.append({"_target_": "DivisiblePadd", "keys": keys, "k": pad_to, "method": "end"})
    steps.append({"_target_": "EnsureTyped", "keys": KEY, "dtype": "$torch.float32"})
    return steps
