"""One pass over every case of a dataset, as cheap as the checks allow: image headers (not
voxels), a content hash of each image file, and each mask read whole (its values, its
foreground and its grid against the image's).

:func:`scan_cases` is shared by the checks before training (:mod:`medxfer.data.checks`)
and by ``medxfer data inspect``; neither raises at the first bad file: every case's
problem is kept, naming its file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medxfer.errors import DataError

#: Bytes read at a time when hashing a file.
_CHUNK = 1 << 20


@dataclass
class CaseScan:
    """What one pass found about one case.

    Attributes:
        id: The case id.
        split: Its split (``None`` before a split is assigned).
        image: Its image file (what messages name).
        mask: Its (first) mask file, masks only.
        spatial_dims: 2 or 3 (``0`` when the image could not be read).
        channels: Channels of the image as read.
        shape: Spatial shape.
        spacing: Voxel spacing in mm.
        dtype: Stored data type.
        header_source: ``header`` (voxels not read), ``read`` (read whole: a DICOM
            series) or ``array`` (MedMNIST).
        digest: Content hash of the image file(s) (or array).
        label: The case's class index or regression target (``None`` for masks).
        mask_values: Class values present in the mask (after the 0/255 rule), masks only.
        foreground: Share of mask voxels that are not background, masks only.
        problem: Why the case cannot be used (names the file), or ``None``.
    """

    id: str
    split: str | None
    image: str
    mask: str | None = None
    spatial_dims: int = 0
    channels: int = 0
    shape: tuple[int, ...] = ()
    spacing: tuple[float, ...] = ()
    dtype: str = ""
    header_source: str = ""
    digest: str = ""
    label: Any = None
    mask_values: tuple[int, ...] | None = None
    foreground: float | None = None
    problem: str | None = None


def scan_cases(dl: Any, cases: list[dict[str, Any]], *, num_classes: int | None = None,
               hashes: bool = True) -> list[CaseScan]:
    """Scan ``cases`` of the datalist ``dl`` (see the module docstring).

    Args:
        dl: The :class:`~medxfer.data.datalist.Datalist` the cases come from.
        cases: Its cases (split or not).
        num_classes: Mask classes including background (checks mask values); defaults to
            the datalist's class count, or none (values only collected) when its classes
            are not declared (``class_order`` ``assumed``).
        hashes: Hash the image files (for duplicates across splits).

    Returns:
        One :class:`CaseScan` per case, in order.
    """
    if dl.medmnist is not None:
        return [_scan_array(dl, c) for c in cases]
    masks = dl.label_kind == "mask"
    classes = num_classes or (None if dl.class_order == "assumed" else
                              max(2, len(dl.class_names)))
    return [_scan_file_case(c, masks=masks, num_classes=classes, hashes=hashes) for c in cases]


def _scan_array(dl: Any, case: dict[str, Any]) -> CaseScan:
    split, index = case["image"].rsplit("#", 1)[1].split("/")
    array = dl.medmnist.images[split][int(index)]
    digest = hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest()
    return CaseScan(str(case["id"]), case.get("split"), str(case["image"]),
                    spatial_dims=array.ndim - 1, channels=int(array.shape[0]),
                    shape=tuple(array.shape[1:]), spacing=(1.0,) * (array.ndim - 1),
                    dtype=str(array.dtype), header_source="array", digest=digest,
                    label=case.get("label"))


def _scan_file_case(case: dict[str, Any], *, masks: bool, num_classes: int | None,
                    hashes: bool) -> CaseScan:
    from medxfer.data.headers import case_header
    from medxfer.data.masks import case_files

    scan = CaseScan(str(case["id"]), case.get("split"), str(case["image"]),
                    label=None if masks else case.get("label"))
    try:
        header = case_header(case, "image")
        scan.spatial_dims, scan.channels = header.spatial_dims, header.channels
        scan.shape, scan.dtype = tuple(header.spatial_shape), header.dtype
        scan.spacing = tuple(round(s, 4) for s in header.spacing)
        scan.header_source = header.source
        if hashes:
            scan.digest = content_digest(case_files(case, "image"), case.get("series_uid"))
        if masks:
            _scan_mask(scan, case, header, num_classes)
    except DataError as exc:
        scan.problem = str(exc)
    return scan


def _scan_mask(scan: CaseScan, case: dict[str, Any], header: Any,
               num_classes: int | None) -> None:
    from medxfer.data.masks import mask_class_values
    from medxfer.data.readers import check_same_geometry, read_case

    if case.get("label") in (None, ""):
        raise DataError(f"case {case.get('id')!r} ({case['image']!r}) has no mask")
    scan.mask = str(case["label"])
    mask = read_case(case, "label")
    check_same_geometry(header, mask)
    values = mask_class_values(mask, num_classes)
    scan.mask_values = tuple(int(v) for v in np.unique(values))
    scan.foreground = float(np.count_nonzero(values)) / max(1, values.size)


def content_digest(files: list[str], series_uid: str | None = None) -> str:
    """A hash of the bytes of ``files`` (a DICOM folder: of the files directly in it, and
    the series UID the case reads)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in files:
        path = Path(name)
        members = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for member in members:
            with open(member, "rb") as handle:
                while block := handle.read(_CHUNK):
                    digest.update(block)
    if series_uid:
        digest.update(str(series_uid).encode())
    return digest.hexdigest()


def name_found_classes(dl: Any, scans: list[CaseScan]) -> None:
    """For mask data whose classes nobody declared, take the classes from the mask values
    the scan found (:func:`medxfer.data.datalist.take_mask_classes`)."""
    from medxfer.data.datalist import take_mask_classes

    if dl.label_kind != "mask" or dl.class_order != "assumed":
        return
    values = {v for s in scans for v in s.mask_values or ()}
    gap = next((v for v in range(1, max(values, default=0)) if v not in values), None)
    if gap is not None:
        odd = next(s for s in scans if any(v > gap for v in s.mask_values or ()))
        high = [v for v in odd.mask_values or () if v > gap]
        raise DataError(
            f"mask {odd.mask!r} (case {odd.id!r}) holds label values {high} but no mask "
            f"holds {gap}: without declared classes the mask values must be the classes 0, 1, "
            "2 ... without gaps; fix the mask, or declare the class names in order with "
            "data.classes")
    take_mask_classes(dl, values)
