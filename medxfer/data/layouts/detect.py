"""Recognising a dataset's layout without configuration (see :func:`detect_layout`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medxfer.data.datalist import stem
from medxfer.data.layouts.common import (
    _LIST_KEYS,
    CHANNEL_SUFFIX,
    DECATHLON_DIRS,
    IMAGE_DIRS,
    LAYOUTS,
    MANIFEST_NAMES,
    MASK_DIRS,
    SPLIT_DIRS,
    has_images,
    image_kind_of,
    read_json,
    visible_files,
)
from medxfer.data.packed_shards import is_pack
from medxfer.data.readers import _is_dicom, dicom_folders
from medxfer.errors import DataError


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


def _folder_readings(folder: Path) -> list[tuple[str, str]]:
    if is_pack(folder):  # a pack declares itself; its shards are no other layout
        return [("packed", "index.json of a medxfer pack")]
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
    stems = [stem(p) for p in visible_files(folder / "imagesTr")]
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
