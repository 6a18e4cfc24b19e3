"""Image headers: shape, channels and geometry of a file without reading its voxels.

:func:`read_header` gives what :func:`medxfer.data.readers.read_image` would give for the
array's shape and the affine, from the header alone where the format allows it: NIfTI
(nibabel's lazy image), NRRD/MetaImage (SimpleITK's ``ReadImageInformation``), PNG/JPEG/
TIFF (Pillow opens lazily) and single DICOM files (pydicom without pixel data). A DICOM
series folder is read whole (its geometry needs every slice), so its :attr:`Header.source`
is ``"read"``.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medxfer.data.masks import case_files
from medxfer.data.readers import (
    AffineGeometry,
    case_series_uid,
    image_kind,
    read_image,
    series_choice_hint,
    simpleitk,
    sitk_affine,
)
from medxfer.errors import DataError, SeriesChoiceError

#: Pillow modes that :func:`medxfer.data.readers.read_image_2d` reads as one channel.
_GREY_MODES = ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass
class Header(AffineGeometry):
    """What a file's header says about its image.

    Attributes:
        path: The file (or DICOM folder).
        spatial_shape: Shape without channels, in the order the reader's array has.
        channels: Channels of the array the reader gives.
        affine: ``(D+1, D+1)`` voxel-to-world matrix, as the reader's.
        dtype: The stored data type.
        source: ``header`` (voxels not read) or ``read`` (the whole image was read).
        meta: Other header facts (DICOM modality, the Pillow mode).
    """

    path: str
    spatial_shape: tuple[int, ...]
    channels: int
    affine: np.ndarray
    dtype: str
    source: str = "header"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return len(self.spatial_shape)


def read_header(path: str | os.PathLike[str], *, series_uid: str | None = None,
                content: bytes | None = None) -> Header:
    """The header of an image file (see the module docstring).

    Args:
        path: The file (or DICOM folder).
        series_uid: The series to read from a DICOM folder of several.
        content: The file's bytes, when the caller has read them already (a NIfTI or 2D
            file's header is then parsed from them, without opening the file again).

    Raises:
        DataError: naming the file, when it is missing or its header cannot be read.
    """
    path = Path(path)
    if content is None and not path.exists():
        raise DataError(f"{str(path)!r} does not exist")
    kind = image_kind(path)
    if kind == "nifti":
        return _nifti_header(path, content)
    if kind == "itk":
        return _itk_header(path)
    if kind == "2d":
        return _pillow_header(path, content)
    return _read_whole(path, series_uid)


def _opened(path: Path, content: bytes | None) -> Any:
    """A binary file object on ``path``, or on ``content`` when given (gunzipped for .gz)."""
    if content is None:
        from nibabel.openers import ImageOpener

        return ImageOpener(str(path))
    stream = io.BytesIO(content)
    return gzip.GzipFile(fileobj=stream) if path.name.lower().endswith(".gz") else stream


def _read_whole(path: Path, series_uid: str | None) -> Header:
    image = read_image(path, series_uid=series_uid, check_finite=False)
    return Header(image.path, image.spatial_shape, int(image.array.shape[0]), image.affine,
                  str(image.meta.get("dtype", image.array.dtype)), "read",
                  {"modality": image.modality})


def _nifti_header(path: Path, content: bytes | None = None) -> Header:
    import nibabel as nib

    try:
        # the header alone: 5x faster than nib.load, which also sniffs and checks the file
        with _opened(path, content) as handle:
            header = nib.Nifti1Header.from_fileobj(handle, check=False)
        if int(header["sizeof_hdr"]) != 348:  # NIfTI-2 (or byte-swapped): let nibabel read it
            header = nib.load(str(path)).header
        dims = [int(d) for d in header["dim"]]
        affine = np.asarray(header.get_best_affine(), dtype=np.float64)
        dtype = str(header.get_data_dtype())
    except Exception as exc:  # nibabel raises many types (EOFError, zlib.error, ...)
        raise DataError(f"{str(path)!r} is not a readable NIfTI file "
                        f"({type(exc).__name__}: {exc}); is it truncated or mislabelled?") from None
    rank = dims[0]
    spatial_rank = min(rank, 3)  # as MONAI's NibabelReader: the first 3 axes are spatial
    shape = tuple(dims[1: spatial_rank + 1])
    channels = int(np.prod(dims[spatial_rank + 1: rank + 1])) if rank > spatial_rank else 1
    if spatial_rank == 2:
        affine = np.delete(np.delete(affine, 2, axis=0), 2, axis=1)
    return Header(str(path), shape, channels, affine, dtype)


def _itk_header(path: Path) -> Header:
    sitk = simpleitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise DataError(f"{str(path)!r} is not a readable NRRD/MetaImage file ({first})") from None
    dims = reader.GetDimension()
    size = tuple(int(s) for s in reader.GetSize())
    affine = sitk_affine(reader.GetDirection(), reader.GetSpacing(), reader.GetOrigin(), dims)
    shape = size if dims == 3 else (size[1], size[0])  # 2D arrays are (rows, columns)
    dtype = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    return Header(str(path), shape, int(reader.GetNumberOfComponents()), affine, dtype)


def _pillow_header(path: Path, content: bytes | None = None) -> Header:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path if content is None else io.BytesIO(content)) as img:
            mode, (width, height) = img.mode, img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{str(path)!r} is not a readable image ({exc})") from None
    channels = 1 if mode in _GREY_MODES else 3
    dtype = "uint16" if mode.startswith("I;16") else "int32" if mode == "I" else \
        "float32" if mode == "F" else "uint8"
    return Header(str(path), (height, width), channels, np.eye(3), dtype, meta={"mode": mode})


def case_header(case: dict[str, Any], key: str = "image") -> Header:
    """The header of a case's image (its channel files' channels added up) or of its first
    mask file (a mask's grid; the masks of one image are checked when they are read).

    Raises:
        DataError: as :func:`read_header`.
    """
    files = case_files(case, key)
    try:
        header = read_header(files[0], series_uid=case_series_uid(case, key))
    except SeriesChoiceError as exc:
        raise exc.with_hint(series_choice_hint(case, key)) from None
    if key == "image" and len(files) > 1:
        header.channels += sum(read_header(f).channels for f in files[1:])
    return header
