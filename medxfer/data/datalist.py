"""Datalists: the cases of a dataset, read from any layout of :mod:`medxfer.data.layouts`.

A case is a plain dict: ``id``, ``image`` (a path, or ``npz:<file>#<split>/<index>``),
``label`` (class index, float target or mask path; ``None`` when unlabelled),
``patient_id``, ``domain`` and ``split`` (``None`` when the data has no stored split),
plus any other manifest column. An image stored as one file per channel lists them all in
``image_files``; an image with several masks (merged by union) lists them in
``label_files``; a segmentation case read from class folders keeps its folder's class name
in ``class``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medxfer.data.masks import found_classes
from medxfer.data.medmnist import MedMNISTData
from medxfer.data.readers import IMAGE_SUFFIXES
from medxfer.errors import DataError
from medxfer.tasks import label_kind

#: The layouts :func:`build_datalist` reads (``data.format`` values besides ``auto``).
FORMATS = ("folder", "manifest", "medmnist", "msd", "dicom", "images_masks", "nnunet",
           "monai_datalist", "images", "packed")
#: The :attr:`Datalist.class_order` values that nobody declared: names sorted
#: alphabetically, with the words that say so.
IMPLICIT_CLASS_ORDERS = {"folders": "its folder names, alphabetical",
                         "sorted": "its label names, alphabetical"}


@dataclass
class Datalist:
    """Every case of a dataset and what is known about the dataset as a whole.

    Attributes:
        name: Short dataset name (file or folder stem), used for output file names.
        format: Its layout, one of :data:`FORMATS`.
        path: The dataset file or folder.
        task: ``classification``, ``regression``, ``segmentation`` or ``unlabelled``.
        cases: One dict per case (see the module docstring).
        class_names: Class names in label order (segmentation: including background).
        spatial_dims: 2 or 3 when known from the format, else ``None``.
        modality: ``CT``/``MR``/... when the dataset declares it.
        medmnist: The arrays of a MedMNIST file (``format == "medmnist"`` only).
        class_order: Where the order of ``class_names`` comes from: ``declared``
            (``data.classes``), ``manifest`` (its ``classes`` list or ``classes.txt``),
            ``numbers`` (numbered labels), ``dataset`` (the MedMNIST, MSD or nnU-Net label
            numbers), ``folders`` (class folder names, alphabetical), ``sorted`` (a
            manifest's label names, alphabetical) or ``assumed`` (masks without declared
            classes: binary); ``""`` when the labels are not classes.
        layout_reason: What made the layout recognisable (``imagesTr/ without
            dataset.json``).
        excluded: Files of the dataset that are not cases, each ``{"file", "reason"}``.
        notices: What was read or assumed that a user should know (a run warns of them).
        split_source: Where a stored split comes from (``""``: none; a run splits by
            ``data.split``).
        missing_splits: Splits a stored split lacks; a run draws them from its training
            cases by ``data.split``'s fractions.
        image_classes: For segmentation read from class folders: the folder classes each
            case keeps in its ``class`` key.
        test_images: Images without labels the dataset sets aside for testing (MSD
            ``imagesTs/``, a datalist's unlabelled ``testing`` entries): not cases, but
            ``medxfer predict`` takes them.
    """

    name: str
    format: str
    path: str
    task: str
    cases: list[dict[str, Any]]
    class_names: list[str] = field(default_factory=list)
    spatial_dims: int | None = None
    modality: str | None = None
    medmnist: MedMNISTData | None = None
    class_order: str = ""
    layout_reason: str = ""
    excluded: list[dict[str, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    split_source: str = ""
    missing_splits: tuple[str, ...] = ()
    image_classes: list[str] = field(default_factory=list)
    test_images: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line: format, path and case count."""
        return f"{self.format} dataset {self.name!r} at {self.path} ({len(self.cases)} cases)"

    @property
    def label_kind(self) -> str | None:
        """What the labels are (see :data:`medxfer.tasks.LabelKind`); ``None`` when unlabelled."""
        return label_kind(self.task)

    def exclude(self, file: str | os.PathLike[str], reason: str) -> None:
        """Record a file that is not read as (part of) a case, and why."""
        self.excluded.append({"file": str(file), "reason": reason})


def stem(path: str | os.PathLike[str]) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES + (".npz", ".csv", ".json"), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def apply_declared_classes(dl: Datalist, classes: list[str]) -> None:
    """Give ``dl`` the class order of ``data.classes`` (labels renumbered by name, or by
    number for numbered labels).

    Raises:
        DataError: for a label that is not one of the declared classes.
    """
    if dl.label_kind == "class":
        names = dl.class_names
        mapping = {}
        used = sorted({c["label"] for c in dl.cases if c["label"] is not None})
        for i in used:
            name = names[i]
            if name in classes:
                mapping[i] = classes.index(name)
            elif name.isdigit() and int(name) < len(classes):
                mapping[i] = int(name)
            else:
                bad = [c["id"] for c in dl.cases if c["label"] == i][:3]
                raise DataError(f"{dl.path}: label {name!r} (cases {', '.join(bad)}) is not one "
                                f"of the declared data.classes {classes}")
        for case in dl.cases:
            if case["label"] is not None:
                case["label"] = mapping[case["label"]]
    elif len(classes) < 2:
        raise DataError("data.classes for segmentation must include the background class")
    dl.class_names = list(classes)
    dl.class_order = "declared"


def assume_binary_masks(dl: Datalist) -> None:
    """Mask data whose classes nobody declared: background and foreground until the masks
    are read (:func:`take_mask_classes` then names the values found)."""
    dl.class_names = ["background", "foreground"]
    dl.class_order = "assumed"


def take_mask_classes(dl: Datalist, values: set[int]) -> None:
    """Give mask data without declared classes the classes of the mask values found
    (:func:`medxfer.data.masks.found_classes`), and say so."""
    dl.class_names = found_classes(values)
    named = ", ".join(f"{i} {n}" for i, n in enumerate(dl.class_names))
    dl.notices.append(f"no mask classes are declared: the masks hold the values "
                      f"{sorted(values)}, read as the classes {named} (a 0/255 mask as 0/1); "
                      "name them in order with data.classes (or a dataset.json's labels)")
