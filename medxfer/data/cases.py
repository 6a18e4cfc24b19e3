"""Reading one case of a datalist: its image (one file, a DICOM series, or a file per
channel) or its mask (by the rules of :mod:`medxfer.data.masks`)."""

from __future__ import annotations

from typing import Any

from medxfer.data.masks import read_mask
from medxfer.data.packed_shards import PACKED_KEY, read_packed_image
from medxfer.data.readers import (
    ImageData,
    case_series_uid,
    read_channel_files,
    read_image,
    series_choice_hint,
)
from medxfer.errors import SeriesChoiceError


def read_case(case: dict[str, Any], key: str = "image") -> ImageData:
    """Read a case's ``image`` or ``label`` (mask) file, from the DICOM series the case
    names for it (:func:`case_series_uid`); every reader of datalist cases uses this.

    An image given as one file per channel (``image_files``, nnU-Net's ``_0000``,
    ``_0001`` ...) is read as one image of those channels; a mask follows the rules of
    :mod:`medxfer.data.masks` (several files of one image merged by union, palette and
    colour PNGs).

    Raises:
        DataError: as :func:`read_image`; for a DICOM folder of several series it says
            which manifest column names the one to read.
    """
    if PACKED_KEY in case:
        return read_packed_image(case, key)
    try:
        if key == "label":
            return read_mask(case)
        files = case.get("image_files")
        if files and len(files) > 1:
            return read_channel_files(files, series_uid=case_series_uid(case, key))
        return read_image(case[key], series_uid=case_series_uid(case, key))
    except SeriesChoiceError as exc:
        raise exc.with_hint(series_choice_hint(case, key)) from None
