"""MedMNIST ``.npz`` files: 2D and 3D images with their stored train/val/test split."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medxfer.errors import DataError

SPLITS = ("train", "val", "test")

#: Class names of the MedMNIST sets this project uses (others get "0", "1", ...).
KNOWN_CLASSES = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "breastmnist": ["malignant", "normal_benign"],
    "adrenalmnist3d": ["normal", "hyperplasia"],
}


@dataclass
class MedMNISTData:
    """The arrays of one MedMNIST file.

    Attributes:
        path: The ``.npz`` file.
        images: Split name -> uint8 array ``[N, C, *spatial]`` (channel first).
        labels: Split name -> int64 array ``[N]`` (the first column of multi-label files).
        spatial_dims: 2 or 3.
        class_names: Names in label order.
    """

    path: str
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    spatial_dims: int
    class_names: list[str]

    @property
    def name(self) -> str:
        """The file name without ``.npz`` (e.g. ``breastmnist``)."""
        return Path(self.path).name.removesuffix(".npz")


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickles).

    Raises:
        DataError: when the file is missing or not a readable ``.npz``.
    """
    if not os.path.exists(path):
        raise DataError(f"{str(path)!r} does not exist")
    if os.path.isdir(path) or not zipfile.is_zipfile(path):
        raise DataError(f"{str(path)!r} is not an .npz file (a zip of NumPy arrays, as "
                        "MedMNIST ships its datasets)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise DataError(f"{str(path)!r} does not exist") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile, zlib and numpy raise many types
        raise DataError(f"{str(path)!r} is not a readable .npz file ({type(exc).__name__}: "
                        f"{exc})") from None


def load_medmnist(path: str | os.PathLike[str]) -> MedMNISTData:
    """Read a MedMNIST ``.npz``: ``{split}_images`` and ``{split}_labels`` for each split.

    Labels may be ``(N,)`` or ``(N, 1)``. 2D images are ``(N, H, W)`` or ``(N, H, W, 3)``;
    3D volumes ``(N, D, H, W)``. Images are returned channel first.

    Args:
        path: The ``.npz`` file.

    Returns:
        The arrays per split.

    Raises:
        DataError: when the file is unreadable or lacks a split's arrays.
    """
    path = Path(path)
    arrays = read_npz(path)
    name = path.name.removesuffix(".npz")
    images, labels = {}, {}
    for split in SPLITS:
        ikey, lkey = f"{split}_images", f"{split}_labels"
        if ikey not in arrays or lkey not in arrays:
            raise DataError(f"{str(path)!r} is not a MedMNIST file: it lacks {ikey!r} or "
                            f"{lkey!r} (it holds {', '.join(sorted(arrays)) or 'nothing'})")
        img, lab = arrays[ikey], np.asarray(arrays[lkey])
        if lab.ndim == 2:
            lab = lab[:, 0]
        if lab.ndim != 1 or len(lab) != len(img):
            raise DataError(f"{str(path)!r}: {lkey} has shape {arrays[lkey].shape}, expected "
                            f"({len(img)},) or ({len(img)}, 1)")
        images[split], labels[split] = img, lab.astype(np.int64)
    spatial_dims = _spatial_dims(name, images["train"])
    for split in SPLITS:
        img = images[split]
        if img.ndim == spatial_dims + 1:
            img = img[:, None]
        elif img.ndim == spatial_dims + 2:
            img = np.moveaxis(img, -1, 1)
        else:
            raise DataError(f"{str(path)!r}: {split}_images has shape {img.shape}; expected "
                            f"{spatial_dims}D images")
        if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
            raise DataError(f"{str(path)!r}: {split}_images holds NaN or Inf values")
        images[split] = img
    n_classes = int(max(lab.max(initial=-1) for lab in labels.values())) + 1
    if any(lab.min(initial=0) < 0 for lab in labels.values()):
        raise DataError(f"{str(path)!r}: labels must be 0, 1, ...; found a negative label")
    known = next((v for k, v in KNOWN_CLASSES.items() if name.startswith(k)), None)
    class_names = known if known and len(known) >= n_classes else [str(i) for i in range(n_classes)]
    return MedMNISTData(str(path), images, labels, spatial_dims, class_names)


def _spatial_dims(name: str, train_images: np.ndarray) -> int:
    if "3d" in name.lower():
        return 3
    if train_images.ndim == 4 and train_images.shape[-1] not in (1, 3):
        return 3
    return 2
