"""The deterministic MONAI chain that reads and preprocesses a file-based case: load,
orientation, spacing, intensity, crop, resize (``data.preprocess``), mask and image alike."""

from __future__ import annotations

from typing import Any

from monai.transforms import Compose, Orientationd, ResizeWithPadOrCropd, Resized, Spacingd

from medxfer.data.steps import LoadCased, NormaliseIntensityd, ToPlainTensorsd
from medxfer.data.transforms import SPACING_MODE, resize_options
from medxfer.errors import DataError
from medxfer.tasks import label_kind


def preprocess_transform(pre: Any, *, task: str, spatial_dims: int, num_classes: int,
                         imagenet_norm: bool, modality: str | None = None,
                         load: bool = True, expect: Any = None) -> Any:
    """The deterministic MONAI chain for file-based cases.

    Args:
        pre: ``config.data.preprocess`` (a :class:`medxfer.config.PreprocessConfig`).
        task: The run's task (segmentation transforms the mask with the image).
        spatial_dims: 2 or 3.
        num_classes: Segmentation classes including background.
        imagenet_norm: ImageNet normalisation follows (affects ``auto`` intensity).
        modality: Dataset-level modality (e.g. from dataset.json), used when a file has none.
        load: Start with :class:`LoadCased` (False: the dict already holds tensors).
        expect: A :class:`medxfer.data.steps.ExpectedImages` every image read must match
            (its dimensionality and channels), or None.

    Returns:
        A ``monai.transforms.Compose`` mapping a case dict to a dict of plain tensors.
    """
    seg = label_kind(task) == "mask"
    keys = ["image", "label"] if seg else ["image"]
    steps: list[Any] = [LoadCased(task, num_classes, expect)] if load else []
    if spatial_dims == 3 and pre.orientation:
        steps.append(Orientationd(keys=keys, axcodes=pre.orientation, labels=None))
    if pre.spacing:
        if len(pre.spacing) != spatial_dims:
            raise DataError(f"data.preprocess.spacing {pre.spacing} needs {spatial_dims} values "
                            f"for {spatial_dims}D images")
        steps.append(Spacingd(keys=keys, pixdim=pre.spacing,
                              mode=(SPACING_MODE, "nearest") if seg else SPACING_MODE))
    steps.append(NormaliseIntensityd(pre.intensity, ct_window=pre.ct_window,
                                     percentiles=pre.percentiles, imagenet_norm=imagenet_norm,
                                     modality=modality))
    crop = getattr(pre, "crop_size", None)
    if crop:
        _check_size("crop_size", crop, spatial_dims)
        steps.append(ResizeWithPadOrCropd(keys=keys, spatial_size=crop))
    if pre.image_size:
        _check_size("image_size", pre.image_size, spatial_dims)
        resize = resize_options(spatial_dims)
        steps.append(Resized(keys=keys, spatial_size=pre.image_size,
                             mode=(resize["mode"], "nearest") if seg else resize["mode"],
                             anti_aliasing=(resize["anti_aliasing"], False) if seg
                             else resize["anti_aliasing"]))
    steps.append(ToPlainTensorsd())
    return Compose(steps)


def _check_size(key: str, size: list[int], spatial_dims: int) -> None:
    if len(size) != spatial_dims:
        raise DataError(f"data.preprocess.{key} {size} needs {spatial_dims} values for "
                        f"{spatial_dims}D images")
