"""Checking a label mask against its image before MONAI Label saves it or a fine-tuning
uses it.

A label must cover the image's voxels (same shape, and the same voxel-to-world geometry
within the tolerance medxfer's readers use for image/mask pairs: 0.01 mm, or 1e-4
relative) and hold whole-number class indices the served models know
(``0 .. num_classes - 1``). Messages name the image id, never a host path, because they go
back to the client.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from medxfer.data.readers import check_same_geometry, read_image
from medxfer.errors import DataError


def check_label(image: str | Path, label: str | Path, num_classes: int, *,
                image_id: str) -> None:
    """Raise :class:`DataError` saying why ``label`` is not a usable mask of ``image``.

    Args:
        image: The image file (or DICOM folder) in the datastore.
        label: The label file to check.
        num_classes: Classes including background; values must lie in ``[0, num_classes)``.
        image_id: The image's id, used in messages.

    Raises:
        DataError: for an unreadable label, another shape or geometry than the image,
            more than one channel, non-integer values or a class the models do not have.
    """
    what = f"the label of image {image_id!r}"
    try:
        mask = read_image(label)
    except DataError as exc:
        raise DataError(f"{what} is not a readable mask ({_without_path(exc, label)}); save "
                        "it as NIfTI or NRRD") from None
    picture = read_image(image)
    if mask.array.shape[0] != 1:
        raise DataError(f"{what} has {mask.array.shape[0]} channels; a label is one map of "
                        "class indices (export a labelmap, not overlapping segments)")
    try:
        check_same_geometry(dataclasses.replace(picture, path=f"{image_id}"),
                            dataclasses.replace(mask, path="(the uploaded label)"))
    except DataError as exc:
        raise DataError(f"{what} does not fit the image: {exc}") from None
    values = np.unique(mask.array)
    if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
        odd = values[~np.isfinite(values) | (values != np.round(values))][:5]
        raise DataError(f"{what} holds values that are not class indices (e.g. "
                        f"{', '.join(f'{v:g}' for v in odd)}); save a labelmap of whole "
                        "numbers")
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise DataError(f"{what} holds class {', '.join(f'{v:g}' for v in bad[:5])}, but the "
                        f"models know classes 0..{num_classes - 1} (0 is background); remove "
                        "the extra segments")


def _without_path(exc: DataError, path: str | Path) -> str:
    """The reader's message with the (temporary, host) file name left out."""
    text = str(exc)
    for form in (repr(str(path)), str(path)):
        text = text.replace(form, "the file")
    return text
