"""Helpers for the data-layer tests: tiny synthetic files (the real data folder fixture,
``shared_data``, lives in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

def write_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    """Write ``array`` as NIfTI with a diagonal affine."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def write_dicom_series(folder: Path, volume: np.ndarray, *, spacing=(0.5, 0.5, 2.0),
                       series_uid: str = "1.2.826.0.1.3680043.2.1125.1.1",
                       description: str = "test", modality: str = "CT", slope: float | None = None,
                       intercept: float | None = None) -> list[Path]:
    """Write ``volume`` (z, y, x int16) as one DICOM file per slice with SimpleITK.

    GDCM's writer sets the process's locale to "C" and leaves it so (text decoding then
    falls back to ASCII, e.g. for a later test's ``subprocess.run(text=True)``): the
    locale is restored afterwards."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_dicom_slices(folder, volume, spacing=spacing, series_uid=series_uid,
                                   description=description, modality=modality, slope=slope,
                                   intercept=intercept)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_slices(folder: Path, volume: np.ndarray, *, spacing, series_uid, description,
                        modality, slope, intercept) -> list[Path]:
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for z in range(volume.shape[0]):
        img = sitk.GetImageFromArray(volume[z].astype(np.int16))
        img.SetSpacing(spacing[:2])
        tags = {
            "0008|0060": modality, "0010|0020": "PAT1", "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
            "0020|000e": series_uid, "0008|103e": description,
            "0020|0032": f"0\\0\\{z * spacing[2]}", "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0013": str(z + 1), "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            "0018|0050": str(spacing[2]),
            "0008|0018": f"{series_uid}.{z + 1}",
        }
        if slope is not None:
            tags["0028|1053"] = str(slope)
            tags["0028|1052"] = str(intercept or 0)
        for key, value in tags.items():
            img.SetMetaData(key, value)
        path = folder / f"s{series_uid.replace('.', '_')[-8:]}_{z:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(img)
        files.append(path)
    return files


@pytest.fixture
def tiny_volume() -> np.ndarray:
    """A 3D int16 ramp (z, y, x) = (4, 6, 5)."""
    return (np.arange(4 * 6 * 5).reshape(4, 6, 5) * 3).astype(np.int16)
