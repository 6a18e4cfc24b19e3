"""Segmentation prediction on new files: label masks on each input's own grid and format.

Each input is preprocessed exactly as the run's evaluation data (``data.preprocess``)
while MONAI records every spatial step on the image's ``MetaTensor``; the predicted label
map is then taken back through those steps by MONAI's ``inverse`` with nearest-neighbour
interpolation (as ``monai.transforms.Invertd`` does), so the mask has the input's shape
and affine. Masks are written in the input's own format:

==========================  ===============================================================
input                       output (in ``output_dir``)
==========================  ===============================================================
NIfTI                       ``<name>_mask.nii.gz`` with the input's header, shape and affine
NRRD / MetaImage            ``<name>_mask.nrrd`` / ``.mha`` with origin, spacing, direction
PNG / JPEG / TIFF / BMP     ``<name>_mask.png`` of the same size
DICOM series (folder/file)  ``<name>_mask.nii.gz`` aligned with the series; with
                            ``dicom_seg`` also ``<name>_seg.dcm`` (needs ``highdicom``)
==========================  ===============================================================

Masks hold class indices (0 background). Nothing is overwritten, and ``masks.csv`` lists
each input, its outputs and voxels per class. It is all or nothing: every file is written
into a hidden staging folder and moved into ``output_dir`` only when all inputs succeeded, so
a failure (an unreadable input, say) leaves ``output_dir`` as it was, absent if it was absent,
and the same call can be repeated once the input is fixed.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import shutil
import warnings
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from medxfer import __version__
from medxfer.data.datasets import unwrap_errors
from medxfer.data.loading import _dataset_hints
from medxfer.data.preprocess import preprocess_transform
from medxfer.data.readers import (
    IMAGE_SUFFIXES,
    ONE_SERIES_HINT,
    list_dicom_series,
    read_dicom_series,
    readable_kind,
)
from medxfer.data.steps import LoadCased, ToPlainTensorsd
from medxfer.data.transforms import AdaptChannels
from medxfer.errors import ConfigError, DataError, InputSizeError, SeriesChoiceError
from medxfer.io import atomic_open, atomic_write_bytes, atomic_write_text, new_temporary
from medxfer.tasks.segmentation.inference import predict_probabilities
from medxfer.training.amp import resolve_precision

SUMMARY_NAME = "masks.csv"
_ITK_OUT = {".nrrd": ".nrrd", ".nhdr": ".nrrd", ".mha": ".mha", ".mhd": ".mha"}


@dataclass
class _Job:
    """One input and the files it will produce."""

    source: Path
    kind: str
    mask: Path
    seg: Path | None = None


def predict_masks(loaded_run: Any, inputs: list[Path], output_dir: Path, *,
                  device: torch.device | str, dicom_seg: bool = False) -> list[dict[str, Any]]:
    """Segment each input with a finished run and write its mask beside the others.

    Args:
        loaded_run: A segmentation run from :func:`medxfer.workflows.predict.load_run`.
        inputs: NIfTI, NRRD/MHA, PNG/JPEG/TIFF/BMP files, DICOM files or DICOM series
            folders.
        output_dir: Folder for the masks and ``masks.csv`` (created when absent).
        device: Where the network runs.
        dicom_seg: Also write a DICOM SEG object for every DICOM input (needs
            ``highdicom``).

    Returns:
        One record per input: ``input``, ``mask``, ``dicom_seg`` (path or None),
        ``shape`` and ``voxels`` (class name -> count).

    Raises:
        ConfigError: when the run is not a segmentation run, ``output_dir`` is not a folder,
            an output file exists, two inputs would write the same file, or ``dicom_seg`` is
            asked without highdicom.
        DataError: for a missing, unreadable or unsupported input, or one whose
            dimensionality or channels do not fit the model (the message names the file).
            On any error no output is written and ``output_dir`` is left as it was.
    """
    if loaded_run.config.task != "segmentation":
        raise ConfigError(f"{str(loaded_run.run_dir)!r} is a {loaded_run.config.task} run; "
                          "predict_masks needs a segmentation run")
    if dicom_seg:
        require_highdicom()
    output_dir = Path(output_dir)
    jobs = _plan_outputs(inputs, output_dir, dicom_seg=dicom_seg)
    device = torch.device(device)
    segmenter = _Segmenter(loaded_run, device)
    names = _class_names(loaded_run)
    records = []
    with _staged_outputs(output_dir) as staging:
        for job in jobs:
            mask, geometry = segmenter(job.source)
            if job.kind == "dicom" and mask.ndim == 2:  # a single-frame file, segmented in 2D
                mask, geometry = _as_one_slice(mask, job.source)
            staged = _Job(job.source, job.kind, staging / job.mask.name,
                          None if job.seg is None else staging / job.seg.name)
            _write_mask(staged, mask, geometry)
            if staged.seg is not None:
                _write_dicom_seg(staged.seg, mask, job.source, names)
            counts = np.bincount(mask.reshape(-1).astype(np.int64), minlength=len(names))
            records.append({"input": str(job.source), "mask": str(job.mask),
                            "dicom_seg": str(job.seg) if job.seg else None,
                            "shape": list(mask.shape),
                            "voxels": {name: int(n) for name, n in zip(names, counts)}})
        _write_summary(staging / SUMMARY_NAME, records, names)
    return records


@contextmanager
def _staged_outputs(output_dir: Path) -> Iterator[Path]:
    """A hidden staging folder for the outputs, published into ``output_dir`` on success.

    The staging folder is made inside ``output_dir`` when it exists, else beside it (so it
    is on the same filesystem and publishing is a rename). When the block succeeds its files
    are moved into ``output_dir`` (a new ``output_dir`` is the staging folder renamed); when
    it fails, the staging folder and every folder made for it are removed, leaving
    ``output_dir`` as it was.
    """
    new = not os.path.lexists(output_dir)
    created = _missing_folders(output_dir.parent) if new else []
    staging: Path | None = None
    try:
        for folder in created:
            folder.mkdir()
        staging = new_temporary(output_dir, suffix=".partial", directory=True,
                                parent=output_dir.parent if new else output_dir)
        yield staging
        _publish(staging, output_dir)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist, outermost first."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


def _publish(staging: Path, output_dir: Path) -> None:
    """Move the files of ``staging`` into ``output_dir``: all of them, or none on error.

    Raises:
        ConfigError: when one of them appeared in ``output_dir`` while predicting.
    """
    if not os.path.lexists(output_dir):
        os.rename(staging, output_dir)
        return
    names = sorted(os.listdir(staging))
    for name in names:
        if os.path.lexists(output_dir / name):
            raise ConfigError(f"{str(output_dir / name)!r} exists; results are never "
                              "overwritten: choose a new --output folder or move the old file "
                              "away")
    moved: list[str] = []
    try:
        for name in names:
            os.rename(staging / name, output_dir / name)
            moved.append(name)
    except BaseException:
        for name in reversed(moved):  # put back what was moved; the caller removes staging
            try:
                os.rename(output_dir / name, staging / name)
            except OSError:
                pass
        raise
    try:
        staging.rmdir()
    except OSError:
        pass


def _as_one_slice(mask: np.ndarray, source: Path) -> tuple[np.ndarray, "_Geometry"]:
    """A single-frame DICOM file's 2D mask ``(rows, columns)`` as the one-slice volume
    ``(column, row, 1)`` in the file's scanner geometry (how its NIfTI mask and DICOM SEG
    are written)."""
    volume = read_dicom_series([source])
    return (np.ascontiguousarray(mask.T[:, :, None]),
            _Geometry(affine=volume.affine, shape=volume.spatial_shape))


def _plan_outputs(inputs: list[Path], output_dir: Path, *, dicom_seg: bool) -> list[_Job]:
    """The output files of every input, checked before any work is done.

    Raises:
        DataError: for a missing input or one of an unknown type.
        ConfigError: when ``output_dir`` is not a folder, an output (or ``masks.csv``)
            exists, or two inputs share one.
    """
    jobs: list[_Job] = []
    taken: dict[Path, Path] = {}
    if os.path.lexists(output_dir) and not output_dir.is_dir():
        raise ConfigError(f"{str(output_dir)!r} is not a folder; masks are written into a "
                          "folder: choose a new --output folder")
    summary = output_dir / SUMMARY_NAME
    if summary.exists():
        raise ConfigError(f"{str(summary)!r} exists; results are never overwritten: choose a "
                          "new --output folder or move the old results away")
    for source in map(Path, inputs):
        kind = readable_kind(source)
        stem = _stem(source)
        if kind == "itk":
            suffix = _ITK_OUT[next(s for s in _ITK_OUT if source.name.lower().endswith(s))]
        else:
            suffix = ".png" if kind == "2d" else ".nii.gz"
        job = _Job(source, kind, output_dir / f"{stem}_mask{suffix}")
        if dicom_seg and kind == "dicom":
            job.seg = output_dir / f"{stem}_seg.dcm"
        for out in (job.mask, job.seg):
            if out is None:
                continue
            if out.exists():
                raise ConfigError(f"{str(out)!r} exists; results are never overwritten: choose "
                                  "a new --output folder or move the old file away")
            if out in taken:
                raise ConfigError(f"{str(taken[out])!r} and {str(source)!r} would both write "
                                  f"{str(out)!r}; predict them into separate --output folders")
            taken[out] = source
        jobs.append(job)
    return jobs


def require_highdicom() -> Any:
    """Import ``highdicom`` (optional) or say how to install it.

    Raises:
        ConfigError: when it is not installed.
    """
    try:
        import highdicom
    except ImportError:
        raise ConfigError("writing DICOM SEG (--dicom-seg) needs the optional package highdicom: "
                          "pip install highdicom") from None
    return highdicom


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _class_names(loaded_run: Any) -> list[str]:
    count = int(loaded_run.sidecar["num_classes"])
    names = [str(n) for n in loaded_run.class_names]
    return names if len(names) == count else [str(i) for i in range(count)]


# ---------------------------------------------------------------------------------------
# preprocessing, prediction and inversion
# ---------------------------------------------------------------------------------------


@dataclass
class _Geometry:
    """The input's grid as read: voxel-to-world affine and spatial shape."""

    affine: np.ndarray
    shape: tuple[int, ...]


class _Segmenter:
    """``path -> (label mask on the input's grid, geometry)`` for one loaded run."""

    def __init__(self, loaded_run: Any, device: torch.device) -> None:
        from monai.transforms import Compose

        config, sidecar = loaded_run.config, loaded_run.sidecar
        self.model = loaded_run.model.to(device).eval()
        self.run_dir = Path(loaded_run.run_dir)
        self.config, self.device = config, device
        self.model_dims = int(sidecar["spatial_dims"])
        self.data_dims = 3 if config.data.slice_axis is not None else self.model_dims
        self.in_channels = int(sidecar["in_channels"])
        self.num_classes = int(sidecar["num_classes"])
        imagenet_norm = bool(sidecar.get("imagenet_norm", False))
        modality, _ = _dataset_hints(config)
        # The image-only chain: its image steps are those of the segmentation chain.
        chain = preprocess_transform(config.data.preprocess, task="classification",
                                     spatial_dims=self.data_dims, num_classes=2,
                                     imagenet_norm=imagenet_norm, modality=modality)
        steps = list(chain.transforms)
        if not (isinstance(steps[0], LoadCased) and isinstance(steps[-1], ToPlainTensorsd)):
            raise RuntimeError("preprocess_transform no longer starts with LoadCased and ends "
                               "with ToPlainTensorsd; update medxfer.tasks.segmentation.prediction")
        self.load, self.to_plain = steps[0], steps[-1]
        self.spatial = Compose(steps[1:-1])
        self.adapt = AdaptChannels(config.data.preprocess.channels, imagenet_norm)
        self.precision = resolve_precision(
            config.train.amp if device.type == "cuda" else "off", device)

    def __call__(self, path: Path) -> tuple[np.ndarray, _Geometry]:
        from monai.data import MetaTensor

        try:
            case = self.load({"image": str(path), "id": path.name})
        except SeriesChoiceError as exc:  # not a manifest case: no series_uid column to name
            raise exc.with_hint(ONE_SERIES_HINT) from None
        image = case["image"]
        dims = image.ndim - 1
        if dims != self.data_dims:
            raise DataError(f"{str(path)!r} is a {dims}D image but the model of this run "
                            f"segments {self.data_dims}D images")
        geometry = _Geometry(np.asarray(image.affine, dtype=np.float64), tuple(image.shape[1:]))
        try:
            processed = self.spatial(case)
        except RuntimeError as exc:
            raise unwrap_errors(exc) from None
        x = self.adapt(self.to_plain(processed)["image"])
        if x.shape[0] != self.in_channels:
            raise DataError(f"{str(path)!r} has {x.shape[0]} channels after preprocessing but "
                            f"the model takes {self.in_channels}")
        try:
            probs = predict_probabilities(self.model, x[None], self.config, device=self.device,
                                          precision=self.precision)
        except InputSizeError as exc:
            raise exc.with_hint(self._size_hint(path)) from None
        labels = MetaTensor(probs[0].argmax(0, keepdim=True).cpu().float())
        restored = labels
        if processed["image"].applied_operations:
            restored = self._invert(labels, processed["image"])
        mask = torch.as_tensor(restored)[0].round().clamp_(0, self.num_classes - 1)
        mask_np = mask.numpy().astype(np.uint8 if self.num_classes <= 256 else np.uint16)
        if tuple(mask_np.shape) != geometry.shape:
            raise RuntimeError(f"inverting the preprocessing of {str(path)!r} gave shape "
                               f"{tuple(mask_np.shape)}, not {geometry.shape}")
        return mask_np, geometry

    def _size_hint(self, path: Path) -> str:
        """What sets the network's input size in predict, and how to change it: the run's
        sliding window (config.yaml), else the whole preprocessed image."""
        config = self.run_dir / "config.yaml"
        sw = self.config.eval.sliding_window
        if sw.roi_size or self.config.data.patch.size:
            key = "eval.sliding_window.roi_size" if sw.roi_size else "data.patch.size"
            window = list(sw.roi_size or self.config.data.patch.size or [])
            return (f"predict gives it windows of {key} {window} (padded) from the run's "
                    f"config; set eval.sliding_window.roi_size in {str(config)!r} to a larger "
                    "window")
        return (f"predict gives it the whole of {str(path)!r} (padded) as the run's config "
                "sets neither eval.sliding_window.roi_size nor data.patch.size; give a larger "
                f"image, or set eval.sliding_window.roi_size in {str(config)!r} to a window it "
                "takes (smaller images are padded to it)")

    def _invert(self, labels: Any, image: Any) -> Any:
        """Undo the spatial steps recorded on ``image`` for ``labels``, nearest neighbour.

        Like ``monai.transforms.Invertd(nearest_interp=True)``, except that resizing is
        undone with ``nearest-exact``: PyTorch's ``nearest`` shifts by half a voxel.
        """
        from monai.transforms import convert_applied_interp_mode

        ops = convert_applied_interp_mode(image.applied_operations, mode="nearest")
        for op in ops:
            if op.get("class") in ("Resize", "Resized"):
                op["extra_info"] = {**op["extra_info"], "mode": "nearest-exact"}
        labels.applied_operations = ops
        labels.meta = deepcopy(image.meta)
        return self.spatial.inverse({"image": labels})["image"]


# ---------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------


def _write_mask(job: _Job, mask: np.ndarray, geometry: _Geometry) -> None:
    if job.kind == "nifti":
        _write_nifti_like_input(job.mask, mask, job.source)
    elif job.kind == "itk":
        _write_itk_like_input(job.mask, mask, job.source)
    elif job.kind == "2d":
        _write_png(job.mask, mask)
    else:
        _write_nifti(job.mask, mask, geometry.affine)


def _nifti_bytes(image: Any) -> bytes:
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def _write_nifti_like_input(path: Path, mask: np.ndarray, source: Path) -> None:
    """A NIfTI mask with the input's header (codes, units), shape and affine."""
    import nibabel as nib

    original = nib.load(str(source))
    header = original.header.copy()
    header.set_data_dtype(mask.dtype)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0, 0
    klass = nib.Nifti2Image if isinstance(original, nib.Nifti2Image) else nib.Nifti1Image
    shape = original.shape[: mask.ndim]
    image = klass(mask.reshape(shape), original.affine, header=header)
    atomic_write_bytes(path, _nifti_bytes(image))


def _write_nifti(path: Path, mask: np.ndarray, affine: np.ndarray) -> None:
    """A NIfTI mask with a scanner-aligned affine (DICOM series)."""
    import nibabel as nib

    image = nib.Nifti1Image(mask, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    atomic_write_bytes(path, _nifti_bytes(image))


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) renamed into place on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temporary(path, suffix="".join(path.suffixes[-1:]))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_itk_like_input(path: Path, mask: np.ndarray, source: Path) -> None:
    """NRRD/MetaImage with the input's origin, spacing and direction (SimpleITK)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(source))
    reader.ReadImageInformation()
    # medxfer's reader gives 3D volumes in (x, y, z) order and 2D images as (rows, cols)
    array = np.ascontiguousarray(mask.transpose() if mask.ndim == 3 else mask)
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(reader.GetOrigin())
    image.SetSpacing(reader.GetSpacing())
    image.SetDirection(reader.GetDirection())
    with _atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)


def _write_png(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def _write_dicom_seg(path: Path, mask: np.ndarray, source: Path, names: list[str]) -> None:
    """A DICOM SEG (one segment per foreground class) referencing the source series."""
    import pydicom
    from pydicom.sr.codedict import codes

    hd = require_highdicom()
    if source.is_dir():  # reading it succeeded, so it holds exactly one series
        files = next(iter(list_dicom_series(source).values()))
    else:
        files = [str(source)]
    datasets = [pydicom.dcmread(f) for f in files]
    if mask.ndim != 3 or mask.shape[2] != len(datasets):
        raise DataError(f"{str(source)!r}: the mask has shape {mask.shape} but the series has "
                        f"{len(datasets)} slices; cannot write a DICOM SEG for it")
    # mask is (i, j, k) = (column, row, slice): frame k is mask[:, :, k] transposed
    frames = np.ascontiguousarray(np.moveaxis(mask, 2, 0).transpose(0, 2, 1))
    algorithm = hd.AlgorithmIdentificationSequence(
        name="medxfer", version=__version__, family=codes.DCM.ArtificialIntelligence)
    segments = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=name[:64],
        segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm) for number, name in enumerate(names[1:], 1)]
    with warnings.catch_warnings():
        # the SEG must carry the source's patient name as it is; highdicom warns about a
        # one-component name (an anonymised ID such as "PGBM-003"), which is valid DICOM
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended "
                                "person name", category=UserWarning)
        seg = hd.seg.Segmentation(
            source_images=datasets, pixel_array=frames, segmentation_type="BINARY",
            segment_descriptions=segments, series_instance_uid=hd.UID(), series_number=9000,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medxfer",
            manufacturer_model_name="medxfer predict", software_versions=__version__,
            device_serial_number="none", omit_empty_frames=bool(frames.any()))
    with atomic_open(path, "wb") as handle:
        seg.save_as(handle)


def _write_summary(path: Path, records: list[dict[str, Any]], names: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["input", "mask", "dicom_seg", *[f"voxels_{n}" for n in names]])
    for record in records:
        writer.writerow([record["input"], record["mask"], record["dicom_seg"] or "",
                         *[record["voxels"][n] for n in names]])
    atomic_write_text(path, buffer.getvalue())
