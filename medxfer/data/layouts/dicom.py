"""DICOM series folders: every series below the folder is an unlabelled case."""

from __future__ import annotations

from pathlib import Path

from medxfer.data.datalist import Datalist
from medxfer.data.masks import is_mask_name
from medxfer.data.readers import dicom_folders, list_dicom_series
from medxfer.errors import DataError


def read_dicom(folder: Path) -> Datalist:
    """A case per DICOM series (id: the series folder, with the UID's end when a folder
    holds several).

    Raises:
        DataError: when the folder holds no DICOM files.
    """
    cases = []
    for d in dicom_folders(folder):
        for uid in list_dicom_series(d):
            rel = d.relative_to(folder).as_posix()
            cid = rel if rel != "." else folder.name
            cases.append({"id": cid, "image": str(d), "label": None, "patient_id": None,
                          "domain": None, "split": None, "series_uid": uid})
    if not cases:
        raise DataError(f"{str(folder)!r} holds no DICOM files")
    if len({c["id"] for c in cases}) < len(cases):
        for c in cases:
            c["id"] = f"{c['id']}:{c['series_uid'][-8:]}"
    dl = Datalist(folder.name, "dicom", str(folder), "unlabelled", cases, [], 3)
    masks = [c["id"] for c in cases if is_mask_name("_" + Path(c["id"]).name)]
    if masks:
        dl.notices.append(
            f"series {', '.join(repr(m) for m in masks[:4])} named like a mask are read as "
            "images: DICOM series folders carry no labels; for segmentation list each image "
            "series with its mask series in a manifest (image, mask columns)")
    return dl
