"""Image readers: one array (channel first) plus its geometry and metadata.

Every reader returns an :class:`ImageData` whose ``array`` is ``[C, *spatial]``:

* 3D volumes (NIfTI, DICOM series, NRRD/MHA) are in voxel order ``(i, j, k)`` with a
  4x4 ``affine`` mapping voxels to RAS millimetres (MONAI's convention, so MONAI's
  ``Orientation`` and ``Spacing`` transforms apply directly);
* 2D images (PNG/JPEG/TIFF) are ``(H, W)`` as matplotlib shows them, with unit spacing.

Problems a user can cause (missing, truncated or non-image files, DICOM without pixel
data, NaN/Inf voxels, an ambiguous DICOM folder) raise :class:`medxfer.errors.DataError`
naming the file and what is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medxfer.errors import DataError, SeriesChoiceError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
#: Every file suffix :func:`read_image` understands (a folder is read as a DICOM series).
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + IMAGE_2D_SUFFIXES + DICOM_SUFFIXES

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class AffineGeometry:
    """Spacing and origin read from an ``affine`` and ``spatial_dims`` (images and headers)."""

    affine: np.ndarray
    spatial_dims: int

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis."""
        lin = self.affine[: self.spatial_dims, : self.spatial_dims]
        return tuple(float(v) for v in np.sqrt((lin ** 2).sum(axis=0)))

    @property
    def origin(self) -> tuple[float, ...]:
        """World position (RAS mm) of the first voxel."""
        return tuple(float(v) for v in self.affine[: self.spatial_dims, -1])


@dataclass
class ImageData(AffineGeometry):
    """An image read from disk.

    Attributes:
        array: Voxel values, channel first: ``[C, *spatial]``.
        affine: ``(D+1, D+1)`` voxel-to-world matrix (RAS mm for 3D, identity-like for 2D).
        path: The file or folder it was read from.
        modality: ``"CT"``, ``"MR"`` ... when the file says so, else ``None``.
        meta: Other metadata (DICOM tags, original dtype, series UID ...).
    """

    array: np.ndarray
    affine: np.ndarray
    path: str
    modality: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.array.ndim - 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the channel axis."""
        return tuple(self.array.shape[1:])

    @property
    def direction(self) -> np.ndarray:
        """Unit direction cosines of the array axes (columns)."""
        lin = self.affine[: self.spatial_dims, : self.spatial_dims]
        return lin / np.asarray(self.spacing)


def image_kind(path: str | os.PathLike[str]) -> str | None:
    """``"nifti"``, ``"itk"``, ``"2d"``, ``"dicom"`` (file or folder) or ``None`` if unknown."""
    path = Path(path)
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    for kind, suffixes in (("nifti", NIFTI_SUFFIXES), ("itk", ITK_SUFFIXES),
                           ("2d", IMAGE_2D_SUFFIXES), ("dicom", DICOM_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


def readable_kind(path: Path) -> str:
    """:func:`image_kind` of an existing image file or DICOM folder.

    Raises:
        DataError: naming the path, when it does not exist or is of an unknown type.
    """
    if not path.exists():
        raise DataError(f"{str(path)!r} does not exist")
    kind = image_kind(path)
    if kind is None:
        raise DataError(f"{str(path)!r}: unknown image type; expected one of "
                        f"{', '.join(IMAGE_SUFFIXES)} or a DICOM folder")
    return kind


def read_image(path: str | os.PathLike[str], *, series_uid: str | None = None,
               check_finite: bool = True) -> ImageData:
    """Read any supported image: the reader is chosen by suffix (a folder is DICOM).

    Args:
        path: NIfTI, NRRD/MHA, PNG/JPEG/TIFF/BMP, a single DICOM file or a DICOM folder.
        series_uid: For a DICOM folder holding several series, the SeriesInstanceUID.
        check_finite: Refuse NaN or Inf voxels.

    Returns:
        The image with its geometry.

    Raises:
        DataError: the file is missing, unreadable, of an unknown type or not finite.
    """
    path = Path(path)
    kind = readable_kind(path)
    try:
        if kind == "nifti":
            image = read_nifti(path)
        elif kind == "itk":
            image = read_itk(path)
        elif kind == "2d":
            image = read_image_2d(path)
        else:
            image = read_dicom_series(path, series_uid=series_uid) if path.is_dir() \
                else single_frame_as_2d(read_dicom_series([path]))
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file trips its parser anywhere
        # not the parser's text: it may quote the file's bytes
        raise DataError(f"{str(path)!r} is damaged or not a {kind} image "
                        f"({type(exc).__name__}); is it truncated or mislabelled?") from None
    if check_finite:
        ensure_finite(image.array, image.path)
    return image


#: The case key naming the DICOM series of a case's image and of its mask (manifest columns).
SERIES_KEYS = {"image": "series_uid", "label": "label_series_uid"}
#: How to pick one series of a DICOM folder that holds several, where nothing names one.
ONE_SERIES_HINT = ("give a folder that holds one series (copy or link that series' files into "
                   "a folder of their own)")


def case_series_uid(case: dict[str, Any], key: str = "image") -> str | None:
    """The SeriesInstanceUID a case names for its ``image`` or its ``label`` (mask) file.

    A missing or empty value (a manifest cell left blank for rows whose folder holds one
    series) names none.
    """
    value = case.get(SERIES_KEYS[key])
    text = "" if value is None else str(value).strip()
    return text or None


def series_choice_hint(case: dict[str, Any], key: str = "image") -> str:
    """What to do when a case's image (or mask) folder holds several DICOM series."""
    what = "image" if key == "image" else "mask"
    return (f"put the UID of the {what} series to read in the manifest's {SERIES_KEYS[key]!r} "
            f"column for case {str(case.get('id'))!r}")


def read_channel_files(files: list[str], *, series_uid: str | None = None) -> ImageData:
    """One image from one file per channel (in order), with the first file's geometry.

    Raises:
        DataError: naming the files, when one cannot be read or their grids differ.
    """
    first = read_image(files[0], series_uid=series_uid)
    arrays = [first.array]
    for other in files[1:]:
        image = read_image(other)
        if image.spatial_shape != first.spatial_shape or not np.allclose(
                image.affine, first.affine, atol=1e-2, rtol=1e-4):
            raise DataError(f"channel files {files[0]!r} and {other!r} of one image have "
                            f"different grids (shape {first.spatial_shape} vs "
                            f"{image.spatial_shape}); the channels of a case must cover the "
                            "same voxels")
        arrays.append(image.array)
    dtype = np.result_type(*arrays)
    array = np.concatenate([a.astype(dtype, copy=False) for a in arrays])
    return ImageData(array, first.affine, first.path, modality=first.modality,
                     meta={**first.meta, "files": len(files)})


def ensure_finite(array: np.ndarray, source: str) -> None:
    """Raise :class:`DataError` when ``array`` holds NaN or Inf values.

    Args:
        array: Voxel values.
        source: The file named in the message.
    """
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            n_nan = int(np.isnan(array).sum())
            raise DataError(f"{source!r}: {int(bad.sum())} voxels are not finite "
                            f"({n_nan} NaN, {int(bad.sum()) - n_nan} Inf); fix or drop this file")


def read_nifti(path: str | os.PathLike[str]) -> ImageData:
    """Read a NIfTI file with MONAI's ``NibabelReader`` (a 4D file's last axis is channels).

    Raises:
        DataError: when the file is truncated, corrupt or not NIfTI.
    """
    from monai.data import NibabelReader

    path = Path(path)
    reader = NibabelReader(squeeze_non_spatial_dims=True)
    try:
        img = reader.read(str(path))
        _refuse_impossible_size(path, int(np.prod(img.shape)))
        stored_dtype = str(img.get_data_dtype())
        data, meta = reader.get_data(img)
    except DataError:
        raise
    except Exception as exc:  # nibabel raises many types (EOFError, zlib.error, ...)
        raise DataError(f"{str(path)!r} is not a readable NIfTI file "
                        f"({type(exc).__name__}: {exc}); is it truncated or mislabelled?") from None
    data = np.asarray(data)
    n_spatial = len(meta["spatial_shape"])
    if data.ndim == n_spatial:
        data = data[None]
    else:
        data = np.moveaxis(data.reshape(*data.shape[:n_spatial], -1), -1, 0)
    affine = np.asarray(meta["affine"], dtype=np.float64)
    if n_spatial == 2:
        affine = np.delete(np.delete(affine, 2, axis=0), 2, axis=1)
    return ImageData(data, affine, str(path), meta={"dtype": stored_dtype})


#: The most a DEFLATE stream (gzip, zlib: .nii.gz, compressed MetaImage and NRRD) expands.
_MOST_EXPANSION = 1032


def _refuse_impossible_size(path: Path, voxels: int) -> None:
    """Refuse a header that claims more voxels than its file can hold (a voxel takes at
    least a byte, compressed at most 1032-fold): a damaged or hostile header, a few bytes
    claiming gigabytes, would otherwise make the reader allocate them. Files whose voxels
    are elsewhere (.mhd, .nhdr) or may be bzip2-compressed (NRRD) are not checked."""
    name = path.name.lower()
    if name.endswith((".mhd", ".nhdr")):
        return
    if name.endswith(".nrrd"):
        with path.open("rb") as handle:
            if b"bz" in handle.read(4096).lower():
                return
    size = path.stat().st_size
    if voxels > _MOST_EXPANSION * size:
        raise DataError(f"{str(path)!r}: its header claims {voxels} voxels, more than its "
                        f"{size} bytes can hold; the file is damaged")


def _refuse_missing_pixels(path: str, ds: Any) -> None:
    """Refuse an uncompressed DICOM file whose header claims more pixels (rows, columns,
    frames) than its pixel data holds: the reader would allocate what the header says."""
    try:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            return
        claimed = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
                   * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) // 8)
        element = ds.get_item("PixelData")  # deferred: its bytes run to the file's end
        held = os.path.getsize(path) - element.file_tell if element.file_tell \
            else len(element.value)
    except Exception:  # noqa: BLE001 - what cannot be told here, the reader tells
        return
    if claimed > held:
        raise DataError(f"{path!r}: its header claims {claimed} bytes of pixels, its pixel "
                        f"data holds {held}; the file is damaged")


def simpleitk() -> Any:
    """SimpleITK, with ITK's and GDCM's warnings off: they go straight to stderr as
    ``WARNING: In .../SimpleITK-build/...`` lines; what matters reaches the user as a
    :class:`DataError`."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    return sitk


def sitk_affine(direction: Any, spacing: Any, origin: Any, dims: int) -> np.ndarray:
    """The affine of a SimpleITK image as :func:`read_itk` gives it: RAS for volumes in
    ``(x, y, z)`` voxel order, columns swapped for 2D images kept as ``(rows, columns)``."""
    affine = np.eye(dims + 1)
    affine[:dims, :dims] = np.asarray(direction).reshape(dims, dims) * np.asarray(spacing)
    affine[:dims, -1] = origin
    if dims == 3:
        return _LPS_TO_RAS @ affine
    affine[:2, :2] = affine[:2, [1, 0]]
    return affine


def _sitk_to_image_data(image: Any, source: str, modality: str | None = None,
                        meta: dict[str, Any] | None = None) -> ImageData:
    sitk = simpleitk()

    array = sitk.GetArrayFromImage(image)  # (z, y, x[, c])
    dims = image.GetDimension()
    n_comp = image.GetNumberOfComponentsPerPixel()
    if n_comp == 1:
        array = array[None]
    else:
        array = np.moveaxis(array, -1, 0)
    affine = sitk_affine(image.GetDirection(), image.GetSpacing(), image.GetOrigin(), dims)
    if dims == 3:  # volumes in (x, y, z) voxel order with a RAS affine, as MONAI does
        array = np.moveaxis(array, [1, 2, 3], [3, 2, 1])
    array = np.ascontiguousarray(array)
    info = {"dtype": str(array.dtype)}
    info.update(meta or {})
    return ImageData(array, affine, source, modality=modality, meta=info)


def read_itk(path: str | os.PathLike[str]) -> ImageData:
    """Read NRRD/MHA/MHD with SimpleITK.

    Raises:
        DataError: when SimpleITK cannot read the file.
    """
    sitk = simpleitk()

    path = Path(path)
    try:
        header = sitk.ImageFileReader()
        header.SetFileName(str(path))
        header.ReadImageInformation()
        _refuse_impossible_size(path, int(np.prod(header.GetSize()))
                                * header.GetNumberOfComponents())
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise DataError(f"{str(path)!r} is not a readable NRRD/MetaImage file ({first})") from None
    return _sitk_to_image_data(image, str(path))


def read_image_2d(path: str | os.PathLike[str]) -> ImageData:
    """Read PNG/JPEG/TIFF/BMP with Pillow as ``[C, H, W]`` (grey: C=1, colour: C=3).

    Raises:
        DataError: when the file is not an image Pillow can decode.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1"):
                img = img.convert("RGB" if img.mode not in ("LA", "1") else "L")
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{str(path)!r} is not a readable image ({exc})") from None
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    return ImageData(np.ascontiguousarray(array), np.eye(3), str(path),
                     meta={"dtype": str(array.dtype)})


# ---------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------


def _is_dicom(path: Path) -> bool:
    from pydicom.misc import is_dicom

    try:
        return path.is_file() and is_dicom(str(path))
    except OSError:
        return False


def list_dicom_series(folder: str | os.PathLike[str]) -> dict[str, list[str]]:
    """SeriesInstanceUID -> its files in slice order (SimpleITK/GDCM), for one folder.

    Raises:
        DataError: when the folder does not exist or holds no DICOM file.
    """
    sitk = simpleitk()

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{str(folder)!r} is not a folder")
    dicom_files = [p for p in sorted(folder.iterdir()) if _is_dicom(p)]
    if not dicom_files:
        inside = dicom_folders(folder, limit=5)
        hint = (f"; its sub-folders {', '.join(repr(str(d)) for d in inside)} hold DICOM "
                "files: give one series folder" if inside else "")
        raise DataError(f"{str(folder)!r} holds no DICOM files (looked for files with the "
                        f"DICM preamble directly inside it){hint}")
    series = {}
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        series[uid] = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    listed = {Path(f).resolve() for files in series.values() for f in files}
    for path in dicom_files:  # GDCM skips files it cannot use: say why instead
        if path.resolve() not in listed:
            _require_pixel_data(str(path), _header(str(path)))
    if not series:
        raise DataError(f"{str(folder)!r}: GDCM found no readable image series in it")
    return series


def dicom_folders(folder: str | os.PathLike[str], limit: int | None = None) -> list[Path]:
    """``folder`` and the folders below it that hold DICOM files directly (judged by their
    first 20 files), in sorted order; at most ``limit`` of them."""
    folder = Path(folder)
    found = []
    for sub in [folder, *sorted(d for d in folder.rglob("*") if d.is_dir())]:
        if any(_is_dicom(p) for p in sorted(sub.iterdir())[:20]):
            found.append(sub)
            if len(found) == limit:
                break
    return found


def _header(path: str) -> Any:
    import pydicom

    try:
        # defer_size keeps pixel data unread while still recording that it exists
        return pydicom.dcmread(path, defer_size=1024)
    except Exception as exc:
        raise DataError(f"{path!r} is not a readable DICOM file ({exc})") from None


def read_dicom_series(source: str | os.PathLike[str] | list[str | os.PathLike[str]], *,
                      series_uid: str | None = None) -> ImageData:
    """Read a DICOM series into a volume ``[1, i, j, k]`` with a RAS affine.

    SimpleITK orders the slices by position and applies rescale slope/intercept (so CT
    comes out in HU); pydicom reads the tags kept in ``meta``.

    Args:
        source: A folder (one series, or several with ``series_uid``) or a list of files.
        series_uid: Which SeriesInstanceUID to read from a folder holding several.

    Returns:
        The volume; ``meta`` holds PatientID, SeriesInstanceUID, SeriesDescription,
        StudyInstanceUID and the rescale values.

    Raises:
        SeriesChoiceError: for a folder of several series without ``series_uid``.
        DataError: for a folder without DICOM files, an unknown series UID,
            a file without pixel data, or a series SimpleITK cannot assemble.
    """
    sitk = simpleitk()

    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        series = list_dicom_series(folder)
        if series_uid is None:
            if len(series) > 1:
                listing = "; ".join(f"{uid} ({_describe_series(files)}, {len(files)} files)"
                                    for uid, files in series.items())
                raise SeriesChoiceError(f"{str(folder)!r} holds {len(series)} DICOM series "
                                        f"({listing})", ONE_SERIES_HINT)
            series_uid = next(iter(series))
        if series_uid not in series:
            raise DataError(f"{str(folder)!r} has no series {series_uid!r}; it holds: "
                            f"{', '.join(series)}")
        files = series[series_uid]
        label = str(folder)
    else:
        files = [str(p) for p in source]
        label = files[0] if len(files) == 1 else str(Path(files[0]).parent)
    headers = [_header(f) for f in files]
    for f, ds in zip(files, headers):
        _require_pixel_data(f, ds)
        _refuse_missing_pixels(f, ds)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(f"{label!r}: SimpleITK cannot read this DICOM series "
                        f"({str(exc).strip().splitlines()[-1]})") from None
    first = headers[0]
    meta = {key: str(first.get(key, "")) for key in
            ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesDescription")}
    meta["RescaleSlope"] = float(first.get("RescaleSlope", 1) or 1)
    meta["RescaleIntercept"] = float(first.get("RescaleIntercept", 0) or 0)
    meta["files"] = len(files)
    modality = str(first.get("Modality", "")) or None
    return _sitk_to_image_data(image, label, modality=modality, meta=meta)


def single_frame_as_2d(image: ImageData) -> ImageData:
    """A DICOM file with one frame (a radiograph, or one slice) as the 2D image
    ``[C, rows, columns]`` a PNG of it reads as, with the pixel spacing (mm per row step,
    per column step) on its affine's diagonal; a file with several frames stays a
    volume."""
    if image.array.ndim != 4 or image.array.shape[3] != 1:
        return image
    array = np.ascontiguousarray(np.swapaxes(image.array[..., 0], 1, 2))  # [C, x, y] -> rows
    steps = np.linalg.norm(image.affine[:3, :2], axis=0)  # mm per step along x (columns), y
    affine = np.diag([steps[1], steps[0], 1.0])
    return ImageData(array, affine, image.path, modality=image.modality,
                     meta={**image.meta, "frames": 1})


def _require_pixel_data(path: str, ds: Any) -> None:
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(f"{path!r} is a DICOM file without pixel data (SOP class "
                        f"{ds.get('SOPClassUID', 'unknown')}); it is not an image: move it out "
                        "of the image folder")


def _describe_series(files: list[str]) -> str:
    ds = _header(files[0])
    return f"{ds.get('Modality', '?')} {ds.get('SeriesDescription', '')}".strip()


# ---------------------------------------------------------------------------------------
# image and mask agreement
# ---------------------------------------------------------------------------------------


def check_same_geometry(image: ImageData, mask: ImageData, *, atol_mm: float = 1e-2) -> None:
    """Raise :class:`DataError` when ``image`` and ``mask`` do not cover the same voxels.

    Args:
        image: The image.
        mask: Its segmentation mask.
        atol_mm: Tolerance on origin and spacing, in mm.
    """
    if image.spatial_shape != mask.spatial_shape:
        raise DataError(f"image {image.path!r} has shape {image.spatial_shape} but its mask "
                        f"{mask.path!r} has shape {mask.spatial_shape}")
    if image.affine.shape == mask.affine.shape and not np.all(  # np.allclose, 5x cheaper
            np.abs(image.affine - mask.affine) <= atol_mm + 1e-4 * np.abs(mask.affine)):
        raise DataError(
            f"image {image.path!r} and mask {mask.path!r} have different geometry: spacing "
            f"{_fmt(image.spacing)} vs {_fmt(mask.spacing)}, origin {_fmt(image.origin)} vs "
            f"{_fmt(mask.origin)}; resample the mask onto the image first")


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
