"""The inputs of ``medxfer predict``: image files, DICOM series folders, and whole datasets
in any layout :mod:`medxfer.data.layouts` reads (a folder, a manifest or a datalist)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from medxfer.data.layouts import build_datalist
from medxfer.data.readers import _is_dicom
from medxfer.errors import DataError

#: Dataset files that stand for their images.
DATASET_SUFFIXES = (".json", ".csv")


def prediction_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """The image files and DICOM series folders ``inputs`` stand for, and what was read.

    An image file or a folder holding DICOM files is itself; a folder in a recognised
    layout, a manifest or a MONAI datalist stands for every image of its cases (never
    their masks) and its unlabelled test images (MSD ``imagesTs/``, a datalist's
    ``testing`` entries); a study folder, for each DICOM series below it.

    Returns:
        The inputs in order, and one line per dataset saying how it was read.

    Raises:
        DataError: for a MedMNIST file, a dataset whose layout cannot be read, or images
            stored as one file per channel (a missing path is passed on as a file).
    """
    files: list[Path] = []
    notes: list[str] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():  # the task's reading names it, after its own checks
            files.append(path)
            continue
        if path.is_file() and path.name.lower().endswith(".npz"):
            raise DataError(f"{str(path)!r} is a MedMNIST file: predict takes image files, "
                            "DICOM series folders, or dataset folders, manifests and datalists "
                            "of image files")
        dataset_file = path.is_file() and path.suffix.lower() in DATASET_SUFFIXES
        series_folder = path.is_dir() and any(_is_dicom(p) for p in sorted(path.iterdir())[:20])
        if not dataset_file and (path.is_file() or series_folder):
            files.append(path)
            continue
        images, note = _dataset_images(path)
        files += images
        notes.append(note)
    return files, notes


def _dataset_images(path: Path) -> tuple[list[Path], str]:
    dl = build_datalist(path)
    split = [c["id"] for c in dl.cases if len(c.get("image_files") or ()) > 1]
    if split:
        raise DataError(f"{str(path)!r} stores its images as one file per channel (case "
                        f"{split[0]!r}): predict takes one file per image; give the image "
                        "files of a one-channel dataset, or stack the channels into one file")
    images = [Path(c["image"]) for c in dl.cases] + [Path(f) for f in dl.test_images]
    if not images:
        raise DataError(f"{str(path)!r} ({dl.format}) holds no image to predict")
    tests = f" and {len(dl.test_images)} test images without labels" if dl.test_images else ""
    return images, (f"{str(path)!r}: read as {dl.format} ({dl.layout_reason}): "
                    f"{len(dl.cases)} case images{tests}")
