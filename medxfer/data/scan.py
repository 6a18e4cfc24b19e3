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

from medxfer.data.cases import read_case
from medxfer.data.datalist import take_mask_classes
from medxfer.data.headers import case_header, read_header
from medxfer.data.masks import case_files, mask_summary
from medxfer.data.packed_shards import PACKED_KEY
from medxfer.data.readers import check_same_geometry
from medxfer.errors import DataError

#: Bytes read at a time when hashing a file.
_CHUNK = 1 << 20
#: Image files up to this size are read once for both their hash and their header.
WHOLE_FILE_BYTES = 64 << 20


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
        return _scan_arrays(dl, cases, hashes)
    masks = dl.label_kind == "mask"
    classes = num_classes or (None if dl.class_order == "assumed" else
                              max(2, len(dl.class_names)))
    return [_scan_file_case(c, masks=masks, num_classes=classes, hashes=hashes) for c in cases]


def _array_ref(case: dict[str, Any]) -> tuple[str, int]:
    split, index = case["image"].rsplit("#", 1)[1].split("/")
    return split, int(index)


def _scan_arrays(dl: Any, cases: list[dict[str, Any]], hashes: bool) -> list[CaseScan]:
    """MedMNIST cases: one array per split holds every image, so shape and type are the
    split's, and the content keys come from one vectorised ``np.unique`` (equal for equal
    images), not a hash per case."""
    refs = [_array_ref(c) for c in cases]
    keys = [""] * len(cases)
    if hashes and cases:
        rows = np.stack([dl.medmnist.images[s][i] for s, i in refs]).reshape(len(cases), -1)
        rows = np.ascontiguousarray(rows)
        as_bytes = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1])))[:, 0]
        keys = [f"array-{g}" for g in np.unique(as_bytes, return_inverse=True)[1].tolist()]
    facts = {}
    for split, array in dl.medmnist.images.items():
        dims = array.ndim - 2
        facts[split] = dict(spatial_dims=dims, channels=int(array.shape[1]),
                            shape=tuple(array.shape[2:]), spacing=(1.0,) * dims,
                            dtype=str(array.dtype), header_source="array")
    return [CaseScan(str(c["id"]), c.get("split"), str(c["image"]), digest=key,
                     label=c.get("label"), **facts[split])
            for c, (split, _), key in zip(cases, refs, keys)]


def _scan_file_case(case: dict[str, Any], *, masks: bool, num_classes: int | None,
                    hashes: bool) -> CaseScan:
    scan = CaseScan(str(case["id"]), case.get("split"), str(case["image"]),
                    label=None if masks else case.get("label"))
    if PACKED_KEY in case:
        return _scan_packed_case(scan, case, masks=masks, num_classes=num_classes)
    try:
        files = case_files(case, "image")
        path = Path(files[0])
        if hashes and len(files) == 1 and path.is_file() and \
                path.stat().st_size <= WHOLE_FILE_BYTES:  # one read: the hash and the header
            content = path.read_bytes()
            scan.digest = hashlib.blake2b(content, digest_size=16).hexdigest()
            header = read_header(path, content=content)
        else:
            header = case_header(case, "image")
            if hashes:
                scan.digest = content_digest(files, case.get("series_uid"))
        scan.spatial_dims, scan.channels = header.spatial_dims, header.channels
        scan.shape, scan.dtype = tuple(header.spatial_shape), header.dtype
        scan.spacing = tuple(round(s, 4) for s in header.spacing)
        scan.header_source = header.source
        if masks:
            _scan_mask(scan, case, header, num_classes)
    except DataError as exc:
        scan.problem = str(exc)
    return scan


def _scan_packed_case(scan: CaseScan, case: dict[str, Any], *, masks: bool,
                      num_classes: int | None) -> CaseScan:
    """A packed case: the header facts and content hash its source's scan gave when it was
    packed (the index keeps them), and its mask read from its shard."""
    header = case[PACKED_KEY]["header"]
    scan.spatial_dims, scan.channels = int(header["spatial_dims"]), int(header["channels"])
    scan.shape, scan.dtype = tuple(header["shape"]), str(header["dtype"])
    scan.spacing, scan.header_source = tuple(header["spacing"]), "packed"
    scan.digest = str(case[PACKED_KEY]["digest"])
    if masks:
        try:
            scan.mask = str(case["label"])
            mask = read_case(case, "label")
            scan.mask_values, scan.foreground = mask_summary(mask, num_classes)
        except DataError as exc:
            scan.problem = str(exc)
    return scan


def _scan_mask(scan: CaseScan, case: dict[str, Any], header: Any,
               num_classes: int | None) -> None:
    if case.get("label") in (None, ""):
        raise DataError(f"case {case.get('id')!r} ({case['image']!r}) has no mask")
    scan.mask = str(case["label"])
    mask = read_case(case, "label")
    check_same_geometry(header, mask)
    scan.mask_values, scan.foreground = mask_summary(mask, num_classes)


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
