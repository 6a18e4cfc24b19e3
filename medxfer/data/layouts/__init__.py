"""Dataset layouts: how a downloaded folder or file is recognised and read into cases.

Each layout has a module that reads it into a :class:`~medxfer.data.datalist.Datalist`;
:func:`detect_layout` recognises a path's layout without configuration. A path that fits
two layouts is refused, naming both and ``data.format`` (the key that chooses); nothing
is read in one way silently when another reading exists.

Declarations win over folder structure: a ``dataset.json`` or a manifest says how its
folder is read (image files it does not list are reported as excluded), so a manifest
beside class folders or ``images/`` + ``masks/`` is no ambiguity.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medxfer.data.datalist import FORMATS, Datalist, apply_declared_classes
from medxfer.data.layouts import decathlon, dicom, folders, manifest, medmnist, packed, paired
from medxfer.data.layouts.common import LAYOUTS
from medxfer.data.layouts.detect import detect_layout
from medxfer.data.layouts.monai_datalist import read_monai_datalist
from medxfer.errors import DataError

__all__ = ["LAYOUTS", "build_datalist", "detect_format", "detect_layout", "read_layout"]


def read_layout(layout: str, path: Path, *, task: str | None = None, image_key: str = "image",
                label_key: str = "label", declared: bool = False) -> Any:
    """Read ``path`` as ``layout`` (one of :data:`LAYOUTS`) into a
    :class:`~medxfer.data.datalist.Datalist`.

    Args:
        layout: The layout name.
        path: The dataset file or folder.
        task: The run's task, or ``None`` to infer it from the labels.
        image_key: Manifest / datalist key of the image paths.
        label_key: Manifest / datalist key of the labels or mask paths.
        declared: Whether ``data.classes`` will name the classes.

    Raises:
        DataError: when the path is not of that layout or cannot be read.
    """
    folder = path if path.is_dir() else path.parent
    if layout == "medmnist":
        return medmnist.read_medmnist(path)
    if layout == "manifest":
        return manifest.read_manifest(path, task=task, image_key=image_key,
                                      label_key=label_key, declared=declared)
    if layout == "monai_datalist":
        return read_monai_datalist(path, task=task, image_key=image_key, label_key=label_key,
                                   declared=declared)
    if layout in ("msd", "nnunet") and not (folder / "imagesTr").is_dir() \
            and not (folder / "dataset.json").is_file():
        raise DataError(f"{str(folder)!r} has no dataset.json, so it is not a Medical "
                        f"Segmentation Decathlon folder (format {layout}), and no imagesTr/ "
                        "either; give the task folder, or another data.format")
    if layout == "msd":
        return decathlon.read_msd(folder)
    if layout == "nnunet":
        return decathlon.read_nnunet(folder)
    if not path.is_dir():
        raise DataError(f"data.format {layout} reads a folder; {str(path)!r} is a file")
    if layout == "packed":
        return packed.read_packed(path)
    if layout == "images_masks":
        return paired.read_images_masks(path)
    if layout == "folder":
        return folders.read_class_folders(path, task=task)
    if layout == "images":
        return folders.read_image_folder(path, task=task)
    return dicom.read_dicom(path)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The layout of ``path`` (see :func:`medxfer.data.layouts.detect.detect_layout`).

    Raises:
        DataError: when the path does not exist, its layout is not recognised, or it fits
            two layouts.
    """
    return detect_layout(path)[0]


def build_datalist(path: str | os.PathLike[str], *, format: str = "auto",
                   task: str | None = None, classes: list[str] | None = None,
                   image_key: str = "image", label_key: str = "label") -> Datalist:
    """Read the cases of the dataset at ``path``.

    Args:
        path: Dataset file or folder.
        format: ``auto`` or one of :data:`FORMATS`.
        task: The task the labels must serve; ``None`` infers it (for inspection). Class
            folders with masks beside the images are read as segmentation, or, for a
            classification task, as classification with the masks left out.
        classes: Declared class names in label order (labels outside them are an error).
        image_key: Manifest column of image paths.
        label_key: Manifest column of labels or mask paths (``mask`` is used when
            ``label`` is absent).

    Returns:
        The datalist.

    Raises:
        DataError: for a missing path, an unknown or ambiguous layout, missing files or
            bad labels.
    """
    path = Path(path).expanduser()
    if format == "auto":
        fmt, reason = detect_layout(path)
    else:
        fmt, reason = format, "set by data.format"
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if fmt not in FORMATS:
        raise DataError(f"data.format {fmt!r} is unknown; use one of auto, {', '.join(FORMATS)}")
    dl = read_layout(fmt, path, task=task, image_key=image_key, label_key=label_key,
                     declared=classes is not None)
    dl.layout_reason = dl.layout_reason or reason
    if classes is not None and dl.label_kind in ("class", "mask"):
        apply_declared_classes(dl, classes)
    if task is not None and dl.task not in (task, "unlabelled"):
        raise DataError(f"{dl.describe()} has {dl.task} labels but the run's task is {task!r}")
    return dl
