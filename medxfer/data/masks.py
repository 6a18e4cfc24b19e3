"""Segmentation masks: which file names mark a mask, and how a mask file becomes class
indices.

The rules, applied the same way by ``medxfer data inspect``, the checks before training and
the training data itself:

* **Names.** A file whose stem contains ``_mask``, ``_seg`` (``_segmentation`` too) or
  ``_label``, in any case, is a mask, never an image; it belongs to the image whose stem is
  the part before that marker (``benign (1)_mask_1.png`` belongs to ``benign (1).png``).
* **Several masks of one image** are merged by union (the voxel-wise maximum).
* **Values.** A mask holds class indices ``0 .. C-1``. A binary mask stored as 0/255 is
  read as 0/1. A palette PNG's palette index is its class. An RGB(A) mask whose three
  channels are equal is read as grey; one of black and a single other colour is binary
  (black is background); any other colour mask is refused, listing the colours found.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from medxfer.data.readers import ImageData, case_series_uid, image_kind, read_image
from medxfer.errors import DataError

#: Markers that make a file name a mask's (case-insensitive, anywhere in the stem).
MASK_MARKERS = ("_mask", "_seg", "_label")
_MARKER = re.compile("|".join(re.escape(m) for m in MASK_MARKERS), re.IGNORECASE)
#: How many colours a refused colour mask lists.
SHOWN_COLOURS = 8
#: The case keys that list every file of a case's image (one per channel, in channel
#: order) or of its mask (merged by union), when there is more than one.
FILES_KEYS = {"image": "image_files", "label": "label_files"}


def is_mask_name(stem: str) -> bool:
    """Whether a file stem marks a mask (see :data:`MASK_MARKERS`)."""
    return _MARKER.search(stem) is not None


def image_stem_of_mask(stem: str) -> str:
    """The stem of the image a mask file belongs to: the part before its first marker."""
    found = _MARKER.search(stem)
    return stem[: found.start()] if found else stem


def case_files(case: dict[str, Any], key: str = "image") -> list[str]:
    """Every file of a case's ``image`` (its channels) or ``label`` (its masks)."""
    files = case.get(FILES_KEYS[key])
    if files:
        return [str(f) for f in files]
    value = case.get(key)
    return [] if value in (None, "") else [str(value)]


def read_mask(case: dict[str, Any]) -> Any:
    """Read a case's mask (the union of its mask files) as an
    :class:`~medxfer.data.readers.ImageData` of one channel, values as stored except for
    the colour rules above.

    Raises:
        DataError: naming the file, for an unreadable file, a colour mask the rules do not
            map, or masks of one image that differ in shape.
    """
    files = case_files(case, "label")
    if not files:
        raise DataError(f"case {case.get('id')!r} ({case.get('image')!r}) has no mask")
    first = read_mask_file(files[0], case)
    array = first.array
    for other in files[1:]:
        more = read_mask_file(other, case).array
        if more.shape != array.shape:
            raise DataError(f"masks {files[0]!r} and {other!r} of one image differ in shape "
                            f"({array.shape[1:]} vs {more.shape[1:]}); they are merged by "
                            "union, so they must cover the same pixels: fix or remove one")
        array = np.maximum(array, more)
    return ImageData(array, first.affine, first.path, meta=dict(first.meta))


def read_mask_file(path: str | os.PathLike[str], case: dict[str, Any] | None = None) -> Any:
    """One mask file: 2D files keep their palette indices and follow the colour rules,
    other files are read as images (a DICOM folder of several series by the case's
    ``label_series_uid``)."""
    path = Path(path)
    if image_kind(path) != "2d" or not path.is_file():
        return read_image(path, series_uid=case_series_uid(case or {}, "label"))
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            array = np.asarray(img.convert("L") if mode in ("LA", "1") else img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"mask {str(path)!r} is not a readable image ({exc})") from None
    if mode == "PA":  # palette index and alpha: the index is the class
        array = array[..., 0]
    elif array.ndim == 3:
        array = colour_mask_values(array, str(path))
    return ImageData(np.ascontiguousarray(array[None]), np.eye(3), str(path),
                     meta={"dtype": str(array.dtype), "mode": mode})


def colour_mask_values(rgb: np.ndarray, source: str) -> np.ndarray:
    """Class indices ``[H, W]`` of a colour mask ``[H, W, 3 or 4]`` (alpha dropped): grey
    stored as colour keeps its value, black and one colour are 0 and 1.

    Raises:
        DataError: listing the colours found, for any other colour mask.
    """
    rgb = rgb[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0]
    colours, counts = np.unique(rgb.reshape(-1, 3), axis=0, return_counts=True)
    black = np.all(colours == 0, axis=1)
    if len(colours) == 2 and black.any():
        return np.any(rgb != 0, axis=-1).astype(np.uint8)
    order = np.argsort(-counts)[:SHOWN_COLOURS]
    shown = ", ".join(f"{tuple(int(v) for v in colours[i])} x{int(counts[i])}" for i in order)
    more = f" and {len(colours) - SHOWN_COLOURS} more" if len(colours) > SHOWN_COLOURS else ""
    raise DataError(
        f"mask {source!r} is a colour image with {len(colours)} colours ({shown}{more}); "
        "medxfer reads a colour mask only as grey stored in colour or as black (background) "
        "and one colour (foreground): save it as class indices (0 background, 1, 2, ... "
        "one value per class), e.g. a grey or palette PNG")


def mask_class_values(mask: Any, num_classes: int | None) -> np.ndarray:
    """The class indices of a mask read by :func:`read_mask`, checked: one channel,
    whole numbers, ``0 .. num_classes-1`` (a binary mask stored as 0/255 becomes 0/1).
    ``num_classes`` ``None`` (no classes declared) checks only that the values are whole
    and not negative, and reads any 0/255 mask as 0/1.

    Raises:
        DataError: naming the mask file and the values found.
    """
    return _checked(mask, num_classes)[0].astype(np.int64)


def mask_summary(mask: Any, num_classes: int | None) -> tuple[tuple[int, ...], float]:
    """The class values present in a mask (checked as by :func:`mask_class_values`) and the
    share of its voxels that are not background.

    Raises:
        DataError: as :func:`mask_class_values`.
    """
    array, values = _checked(mask, num_classes)
    foreground = float(np.count_nonzero(array)) / max(1, array.size)
    return tuple(int(v) for v in values), foreground


def _checked(mask: Any, num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The mask's values (0/255 as 0/1) and the distinct values present."""
    array = mask.array
    if array.shape[0] != 1:
        raise DataError(f"mask {mask.path!r} has {array.shape[0]} channels; expected one "
                        "channel of class indices")
    if np.issubdtype(array.dtype, np.floating) and not np.array_equal(array, np.round(array)):
        raise DataError(f"mask {mask.path!r} holds non-integer values; a mask must hold "
                        "class indices 0, 1, ...")
    values = _distinct(array)
    if num_classes in (2, None) and set(values.tolist()) <= {0, 255}:
        array = array > 0
        values = np.flatnonzero([not array.all(), array.any()])
    bad = [int(v) if float(v).is_integer() else v for v in values.tolist()
           if v < 0 or num_classes is not None and v >= num_classes]
    if bad:
        raise DataError(f"mask {mask.path!r} holds label values {bad[:5]} outside the "
                        f"declared classes 0..{num_classes - 1}; fix the mask or declare the "
                        "classes (data.classes, or the labels of dataset.json)")
    return array, values


def _distinct(array: np.ndarray) -> np.ndarray:
    """``np.unique(array)``; by counting (3x faster) for small non-negative integers."""
    if array.size and np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        flat = array.reshape(-1)
        if flat.size and flat.min() >= 0 and flat.max() < 65536:
            return np.flatnonzero(np.bincount(flat.astype(np.intp, copy=False)))
    return np.unique(array)


def found_classes(values: set[int]) -> list[str]:
    """Class names for masks without declared classes, from the values found in them:
    ``background``, then ``foreground`` for binary masks, else ``class 1`` .. ``class K``
    (every value up to the largest found)."""
    top = max(values, default=1)
    if top <= 1:
        return ["background", "foreground"]
    return ["background"] + [f"class {v}" for v in range(1, top + 1)]
