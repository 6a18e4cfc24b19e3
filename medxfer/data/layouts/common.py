"""What the layout readers share: folder names, file filters, JSON reading."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medxfer.data.readers import _is_dicom, image_kind
from medxfer.errors import DataError

#: Every layout, with what it looks like (``data.format`` takes these names).
LAYOUTS = {
    "medmnist": "a MedMNIST .npz file (its own train/val/test split)",
    "manifest": "a CSV/JSON manifest: a row per case (image, label or mask, optional "
                "patient_id, domain, split)",
    "monai_datalist": "a MONAI datalist JSON: training / validation / testing lists, an "
                      "optional fold key per case",
    "msd": "a Medical Segmentation Decathlon folder: imagesTr/ + labelsTr/ [+ imagesTs/], "
           "with or without dataset.json",
    "nnunet": "an nnU-Net raw dataset: imagesTr/CASE_0000.ext (a file per channel) + "
              "labelsTr/CASE.ext, dataset.json with channel_names and labels",
    "images_masks": "images/ + masks/ (or labels/, annotations/), matched by file stem",
    "folder": "a sub-folder per class (ImageNet style), optionally inside train/ val/ test/ "
              "folders; masks beside the images (NAME_mask.png) make it segmentation",
    "images": "a folder of image files without labels (masks beside them, NAME_mask.png, "
              "make it segmentation)",
    "dicom": "DICOM series folders (unlabelled)",
    "packed": "a folder written by `medxfer data pack`: index.json and tar shards, read "
              "shard by shard (its stored split is used)",
}

MANIFEST_NAMES = ("manifest.csv", "manifest.json", "datalist.csv", "datalist.json")
IMAGE_DIRS = ("images", "image", "imgs")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "annotation",
             "segmentations", "ground_truth", "gt")
#: Folder names of split folders (``train/CLASS/...``) and the split each stands for.
SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val",
              "validation": "val", "test": "test", "testing": "test"}
DECATHLON_DIRS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
#: A file stem with an nnU-Net channel suffix (``case_0000``).
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_LIST_KEYS = ("training", "validation", "testing", "test")


def read_json(path: Path) -> Any:
    """A JSON file's content.

    Raises:
        DataError: naming the file when it cannot be read or is not JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{str(path)!r} cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{str(path)!r} is not valid JSON ({exc})") from None


def visible_files(folder: Path) -> list[Path]:
    """The files directly in ``folder`` whose names do not start with a dot, sorted."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]


def image_kind_of(path: Path) -> bool:
    """Whether ``path`` is a file of an image type medxfer reads."""
    return path.is_file() and image_kind(path) is not None


def has_images(folder: Path) -> bool:
    """Whether ``folder`` holds image files (judged by its first 50 entries)."""
    return any(image_kind_of(p) or _is_dicom(p) for p in sorted(folder.iterdir())[:50])
