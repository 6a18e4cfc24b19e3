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

import json
import re
from pathlib import Path
from typing import Any

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


def detect_layout(path: str | Path) -> tuple[str, str]:
    """The layout of ``path`` and why (what was seen).

    Raises:
        DataError: when the path does not exist, fits no layout, or fits two (naming both
            and ``data.format``).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    readings = _file_readings(path) if path.is_file() else _folder_readings(path)
    if not readings:
        raise DataError(
            f"data path {str(path)!r}: cannot tell its layout; medxfer reads "
            + "; ".join(f"{name} ({what})" for name, what in LAYOUTS.items())
            + ". Set data.format (`medxfer data inspect --format`) if it is one of them")
    if len(readings) > 1:
        both = " and ".join(f"{name} ({why})" for name, why in readings[:2])
        names = " or ".join(f"data.format: {name}" for name, _ in readings[:2])
        raise DataError(f"data path {str(path)!r} fits two layouts: {both}. Choose one with "
                        f"{names} (`medxfer data inspect --format NAME`), or move the other "
                        "files out")
    return readings[0]


def _file_readings(path: Path) -> list[tuple[str, str]]:
    name = path.name.lower()
    if name.endswith(".npz"):
        return [("medmnist", "a .npz file")]
    if name.endswith(".csv"):
        return [("manifest", "a .csv file")]
    if not name.endswith(".json"):
        raise DataError(f"data path {str(path)!r}: a dataset file must be .npz (MedMNIST), "
                        ".csv/.json (manifest), a MONAI datalist .json or dataset.json "
                        "(MSD, nnU-Net)")
    meta = read_json(path)
    if path.name == "dataset.json" and (path.parent / "imagesTr").is_dir():
        return _decathlon_readings(path.parent, meta)
    return [_json_reading(path, meta)]


def _json_reading(path: Path, meta: Any) -> tuple[str, str]:
    if isinstance(meta, dict) and any(isinstance(meta.get(k), list) for k in _LIST_KEYS) \
            and not any(k in meta for k in ("data", "cases")):
        keys = [k for k in _LIST_KEYS if isinstance(meta.get(k), list)]
        return "monai_datalist", f"{path.name} with {', '.join(keys)} lists"
    return "manifest", f"{path.name}: a list of cases"


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


def _folder_readings(folder: Path) -> list[tuple[str, str]]:
    declared = [n for n in MANIFEST_NAMES if (folder / n).is_file()]
    if (folder / "dataset.json").is_file():
        meta = read_json(folder / "dataset.json")
        readings = _decathlon_readings(folder, meta) if (folder / "imagesTr").is_dir() \
            else [_json_reading(folder / "dataset.json", meta)]
        if declared:
            readings.append(("manifest", f"{declared[0]} beside dataset.json"))
        return readings
    if len(declared) > 1:
        raise DataError(f"{str(folder)!r} holds {len(declared)} manifests "
                        f"({', '.join(declared)}); give the one to read as data.path")
    if declared:
        manifest = folder / declared[0]
        if manifest.suffix == ".json":
            return [_json_reading(manifest, read_json(manifest))]
        return [("manifest", declared[0])]
    return _structure_readings(folder)


def _decathlon_readings(folder: Path, meta: Any) -> list[tuple[str, str]]:
    """MSD, nnU-Net or MONAI-datalist readings of a folder with ``imagesTr/``."""
    meta = meta if isinstance(meta, dict) else {}
    readings = []
    if "channel_names" in meta:
        readings.append(("nnunet", "dataset.json with channel_names"))
    if isinstance(meta.get("training"), list):
        if any(k in meta for k in ("validation", "testing")) or any(
                isinstance(e, dict) and "fold" in e for e in meta["training"]):
            readings.append(("monai_datalist", "dataset.json with validation/testing lists "
                             "or fold keys"))
        else:
            readings.append(("msd", "dataset.json with a training list"))
    if not readings:
        readings = _tr_readings(folder)
    return readings


def _tr_readings(folder: Path) -> list[tuple[str, str]]:
    """MSD or nnU-Net by the names in ``imagesTr/`` (no dataset.json says which)."""
    stems = [_stem(p) for p in visible_files(folder / "imagesTr")]
    suffixed = [s for s in stems if CHANNEL_SUFFIX.match(s)]
    if stems and len(suffixed) == len(stems):
        return [("nnunet", "imagesTr/ files with _0000 channel suffixes")]
    if suffixed:
        return [("msd", f"imagesTr/ ({len(stems) - len(suffixed)} files without a channel "
                 "suffix)"), ("nnunet", f"imagesTr/ ({len(suffixed)} files with _0000 channel "
                              "suffixes)")]
    return [("msd", "imagesTr/" + (" and labelsTr/" if (folder / "labelsTr").is_dir() else "")
             + " without dataset.json")]


def _structure_readings(folder: Path) -> list[tuple[str, str]]:
    from medxfer.data.readers import _is_dicom, dicom_folders

    children = [c for c in sorted(folder.iterdir()) if not c.name.startswith(".")]
    dirs = [c for c in children if c.is_dir()]
    files = [c for c in children if c.is_file()]
    image_dirs = [d for d in dirs if d.name.lower() in IMAGE_DIRS]
    mask_dirs = [d for d in dirs if d.name.lower() in MASK_DIRS]
    reserved = {d.name for d in image_dirs + mask_dirs} | set(DECATHLON_DIRS)
    split_dirs = [d for d in dirs if d.name.lower() in SPLIT_DIRS
                  and any(s.is_dir() and has_images(s) for s in d.iterdir())]
    class_dirs = [d for d in dirs if d.name not in reserved and d not in split_dirs
                  and has_images(d)]
    if any(_is_dicom(p) for d in class_dirs for p in sorted(d.iterdir())[:3]) \
            or any(_is_dicom(p) for p in files[:20]):
        return [("dicom", "DICOM files")]
    readings = _tr_readings(folder) if (folder / "imagesTr").is_dir() else []
    if image_dirs and mask_dirs:
        readings.append(("images_masks", f"{image_dirs[0].name}/ and {mask_dirs[0].name}/"))
    if split_dirs and class_dirs:
        raise DataError(f"{str(folder)!r} holds split folders ({_names(split_dirs)}) and other "
                        f"folders of images ({_names(class_dirs)}); put every class folder "
                        "inside a split folder, or move the split folders out")
    if split_dirs:
        order = list(SPLIT_DIRS)
        split_dirs.sort(key=lambda d: order.index(d.name.lower()))
        readings.append(("folder", "split folders " + _names(split_dirs) + " of class folders"))
    if len(class_dirs) >= 2 or class_dirs and not readings:
        readings.append(("folder", "class folders " + _names(class_dirs)))
    if any(image_kind_of(p) for p in files):
        readings.append(("images", "image files directly in the folder"))
    if not readings and dicom_folders(folder, limit=1):  # a patient or study folder
        readings.append(("dicom", "DICOM series in its sub-folders"))
    npz = [p.name for p in files if p.name.lower().endswith(".npz")]
    if not readings and npz:
        raise DataError(f"{str(folder)!r} holds {len(npz)} .npz files ({', '.join(npz[:4])}); "
                        "a MedMNIST dataset is one file: give that file as data.path")
    return readings


def _names(dirs: list[Path], shown: int = 4) -> str:
    text = ", ".join(f"{d.name}/" for d in dirs[:shown])
    return text + (f" and {len(dirs) - shown} more" if len(dirs) > shown else "")


def visible_files(folder: Path) -> list[Path]:
    """The files directly in ``folder`` whose names do not start with a dot, sorted."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]


def image_kind_of(path: Path) -> bool:
    """Whether ``path`` is a file of an image type medxfer reads."""
    from medxfer.data.readers import image_kind

    return path.is_file() and image_kind(path) is not None


def has_images(folder: Path) -> bool:
    """Whether ``folder`` holds image files (judged by its first 50 entries)."""
    from medxfer.data.readers import _is_dicom

    return any(image_kind_of(p) or _is_dicom(p) for p in sorted(folder.iterdir())[:50])


def _stem(path: Path) -> str:
    from medxfer.data.datalist import stem

    return stem(path)


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
    from medxfer.data.layouts import decathlon, dicom, folders, manifest, medmnist, paired
    from medxfer.data.layouts.monai_datalist import read_monai_datalist

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
    if layout == "images_masks":
        return paired.read_images_masks(path)
    if layout == "folder":
        return folders.read_class_folders(path, task=task)
    if layout == "images":
        return folders.read_image_folder(path, task=task)
    return dicom.read_dicom(path)
