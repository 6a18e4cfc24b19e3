"""MONAI dictionary steps of the preprocessing chain (imported lazily: they need MONAI).

They subclass ``monai.transforms.Transform`` so that ``CacheDataset`` and
``PersistentDataset`` know they are deterministic and cache their output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Mapping

import numpy as np
import torch
from monai.transforms import Transform

from medxfer.data.cases import read_case
from medxfer.data.masks import mask_class_values
from medxfer.data.readers import ImageData, check_same_geometry
from medxfer.data.transforms import AdaptChannels, normalise_intensity, resolve_intensity
from medxfer.errors import DataError
from medxfer.tasks import label_kind


@dataclass(frozen=True)
class ExpectedImages:
    """What every case's image must match to be batched with the others and fed to one
    network: the dataset's dimensionality and channels.

    The chain checks each case as it reads it, so that in a cached run (``data.cache:
    memory``, the default) a case that differs fails while the cache fills, before the
    first epoch; uncached, when the case is first read. The preprocessing steps keep the
    channel count, so the count read is the count after preprocessing.

    Attributes:
        spatial_dims: 2 or 3.
        channels: Channels of the image that set them (the first training case), or None
            to leave channels unchecked.
        source: That image's file.
        adapt: ``data.preprocess.channels``: with ``rgb`` grey and colour images agree
            (both become colour), with ``grey`` all do; with ``auto`` the channels as read
            must.
        hint: What to change, besides the case, when the channels differ.
    """

    spatial_dims: int
    channels: int | None
    source: str
    adapt: str = "auto"
    hint: str = ""

    def check(self, image: ImageData, case: Mapping[Hashable, Any]) -> None:
        """Raise :class:`DataError` naming the case's file when ``image`` differs."""
        self.check_counts(image.spatial_dims, int(image.array.shape[0]), case)

    def check_counts(self, spatial_dims: int, have: int, case: Mapping[Hashable, Any]) -> None:
        """Raise :class:`DataError` naming the case's file when an image of
        ``spatial_dims`` dimensions and ``have`` channels (from its header) differs."""
        what = f"{str(case['image'])!r} (case {case.get('id')!r})"
        if spatial_dims != self.spatial_dims:
            raise DataError(
                f"{what} is {spatial_dims}D among {self.spatial_dims}D images ("
                f"{self.source!r} is {self.spatial_dims}D, and one network takes one "
                "dimensionality): drop that case from the data or convert it; a 2D slice or a "
                "single-frame DICOM file is 2D, a NIfTI/NRRD volume or DICOM series folder 3D")
        if self.channels is None or have == self.channels:
            return
        adapt = AdaptChannels(self.adapt)
        if adapt.out_channels(have) == adapt.out_channels(self.channels):
            return
        raise DataError(
            f"{what} has {_channels(have)} after preprocessing, but the first training case "
            f"{self.source!r} has {self.channels} (it sets the network's input channels): "
            "every case needs the same channels (a 4D NIfTI holds one channel per volume, "
            "a colour image 3); fix or drop the case that differs" + self.hint)


def _channels(n: int) -> str:
    return f"{n} channel{'s' if n != 1 else ''}"


class LoadCased(Transform):
    """Read a case dict's ``image`` (and mask ``label`` for segmentation) as MetaTensors.

    Checks: the files are readable and finite, image and mask share shape and geometry,
    and mask values are classes ``0 .. num_classes-1`` (the rules of
    :mod:`medxfer.data.masks`: binary masks stored as 0/255 are read as 0/1, several masks
    of one image merged, palette and colour PNGs). Adds ``_modality`` and ``_dtype`` for
    the intensity step.

    Args:
        task: The run's task.
        num_classes: Segmentation classes including background (checks mask values).
        expect: The dimensionality and channels every image must have, or None.
    """

    def __init__(self, task: str, num_classes: int = 2,
                 expect: ExpectedImages | None = None) -> None:
        self.task = task
        self.num_classes = num_classes
        self.expect = expect

    def __call__(self, case: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load one case."""
        from monai.data import MetaTensor

        out = dict(case)
        image = read_case(case, "image")
        if self.expect is not None:
            self.expect.check(image, case)
        out["image"] = MetaTensor(torch.from_numpy(_native(image.array)),
                                  affine=torch.as_tensor(image.affine, dtype=torch.float64))
        out["_modality"] = image.modality or case.get("_modality") or ""
        out["_dtype"] = image.meta.get("dtype", "")
        if label_kind(self.task) == "mask":
            if case.get("label") in (None, ""):
                raise DataError(f"case {case.get('id')!r} ({case['image']!r}) has no mask")
            mask = read_case(case, "label")
            check_same_geometry(image, mask)
            values = mask_class_values(mask, self.num_classes)
            out["label"] = MetaTensor(torch.from_numpy(values),
                                      affine=torch.as_tensor(image.affine, dtype=torch.float64))
        return out


def _native(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint16:
        array = array.astype(np.int32)
    elif array.dtype == np.uint32 or array.dtype == np.uint64:
        array = array.astype(np.int64)
    elif array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    if not array.flags.writeable:
        array = array.copy()
    return np.ascontiguousarray(array)


class NormaliseIntensityd(Transform):
    """Dictionary form of :func:`normalise_intensity`, picking ``auto`` per image."""

    def __init__(self, mode: str, *, ct_window: list[float], percentiles: list[float],
                 imagenet_norm: bool, modality: str | None = None) -> None:
        self.mode, self.ct_window, self.percentiles = mode, ct_window, percentiles
        self.imagenet_norm, self.modality = imagenet_norm, modality

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Normalise ``data["image"]``."""
        out = dict(data)
        image = out["image"]
        mode = resolve_intensity(self.mode, modality=(out.get("_modality") or self.modality),
                                 spatial_dims=image.ndim - 1, dtype=out.get("_dtype", ""),
                                 imagenet_norm=self.imagenet_norm)
        out["image"] = normalise_intensity(image, mode, ct_window=self.ct_window,
                                           percentiles=self.percentiles)
        return out


class ToPlainTensorsd(Transform):
    """Drop MONAI metadata: float32 image, int64 mask, and the helper keys."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Convert one case dict."""
        out = {k: v for k, v in data.items() if not str(k).startswith("_")}
        out["image"] = _plain(out["image"]).float().contiguous()
        if isinstance(out.get("label"), torch.Tensor):
            out["label"] = _plain(out["label"]).round().long().contiguous()
        return out


def _plain(x: Any) -> torch.Tensor:
    from monai.data import MetaTensor

    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
