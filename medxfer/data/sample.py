"""The embedded sample data: small synthetic datasets the project makes itself, seeded.

* ``classification/``: 160 grey 64x64 PNGs, classes ``normal`` and ``lesion`` (a bright
  blob or ring on textured tissue), two images per patient, ``manifest.csv`` with
  ``image,label,patient_id`` and ``classes.txt`` (label order).
* ``segmentation_2d/``: 40 PNG images with 0/1 PNG masks and ``manifest.csv``
  (``image,mask,patient_id``).
* ``segmentation_3d/``: 12 NIfTI volumes 32^3 with masks and an MSD-style ``dataset.json``.

``scripts/make_sample_data.py`` writes them into the repository's ``sample_data/``;
:func:`ensure_sample_data` finds them there or generates them into a cache folder.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np

from medxfer.errors import DataError
from medxfer.io import new_temporary

SAMPLE_FOLDERS = ("classification", "segmentation_2d", "segmentation_3d")
#: The tasks a run can train on the sample data with no data.path.
SAMPLE_TASKS = ("classification", "segmentation")
_MARKERS = {"classification": "manifest.csv", "segmentation_2d": "manifest.csv",
            "segmentation_3d": "dataset.json"}
_ALIASES = {"segmentation": "segmentation_3d", "regression": "classification"}


def repo_sample_root() -> Path:
    """``sample_data/`` of the source checkout this package was imported from."""
    return Path(__file__).resolve().parents[2] / "sample_data"


def cache_sample_root() -> Path:
    """Where an installed package generates the sample data: ``$MEDXFER_CACHE/sample_data``
    (default ``~/.cache/medxfer/sample_data``)."""
    base = os.environ.get("MEDXFER_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "medxfer") / "sample_data"


def ensure_sample_data(task: str = "classification") -> Path:
    """The folder of the sample dataset for ``task``, generating it when absent.

    Args:
        task: ``classification``, ``segmentation_2d``, ``segmentation_3d`` or a run task
            (``segmentation`` means ``segmentation_3d``).

    Returns:
        The repository's ``sample_data/<folder>`` when present, else the cache copy.

    Raises:
        DataError: for an unknown task name.
    """
    folder = _ALIASES.get(task, task)
    if folder not in SAMPLE_FOLDERS:
        raise DataError(f"no sample data for {task!r}; there is {', '.join(SAMPLE_FOLDERS)}")
    for root in (repo_sample_root(), cache_sample_root()):
        if (root / folder / _MARKERS[folder]).is_file():
            return root / folder
    root = cache_sample_root()
    root.mkdir(parents=True, exist_ok=True)
    tmp = new_temporary(root / folder, directory=True)
    try:
        _WRITERS[folder](tmp)
        try:
            tmp.rename(root / folder)
        except OSError:  # another process finished first
            if not (root / folder / _MARKERS[folder]).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / folder


def generate_sample_data(root: str | os.PathLike[str], *, overwrite: bool = False) -> list[Path]:
    """Write every sample dataset under ``root`` (deterministic: same seed, same images).

    Args:
        root: Target folder (e.g. the repository's ``sample_data``).
        overwrite: Replace existing sample folders.

    Returns:
        The dataset folders written.

    Raises:
        DataError: when a folder exists and ``overwrite`` is false.
    """
    root = Path(root)
    written = []
    for folder in SAMPLE_FOLDERS:
        target = root / folder
        if target.exists():
            if not overwrite:
                raise DataError(f"{str(target)!r} exists; pass overwrite=True (--overwrite)")
            shutil.rmtree(target)
        target.mkdir(parents=True)
        _WRITERS[folder](target)
        written.append(target)
    return written


# ---------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------


def _texture(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / (noise.std() + 1e-8)


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    return np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")


def _tissue(rng: np.random.Generator, shape: tuple[int, ...], body: dict) -> np.ndarray:
    """Textured tissue inside an elliptical body outline, dark outside: values ~[0, 0.6]."""
    coords = _grid(shape)
    r2 = sum(((c - m) / a) ** 2 for c, m, a in zip(coords, body["centre"], body["radii"]))
    inside = 1 / (1 + np.exp((np.sqrt(r2) - 1) * 12))
    tissue = 0.35 + 0.06 * _texture(rng, shape, 1.5) + 0.05 * _texture(rng, shape, 4.0)
    return inside * tissue + 0.03 * rng.standard_normal(shape)


def _blob(shape: tuple[int, ...], centre: np.ndarray, radius: float, ring: bool) -> np.ndarray:
    coords = _grid(shape)
    d = np.sqrt(sum((c - m) ** 2 for c, m in zip(coords, centre)))
    if ring:
        return np.exp(-((d - radius) ** 2) / (2 * (radius * 0.25) ** 2))
    return np.exp(-(d ** 2) / (2 * (radius * 0.6) ** 2))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, optimize=True)


def _write_classification(target: Path, *, seed: int = 11, patients: int = 80,
                          size: int = 64) -> None:
    rng = np.random.default_rng(seed)
    shape = (size, size)
    rows = []
    for p in range(patients):
        label = "lesion" if p % 2 else "normal"
        body = {"centre": rng.uniform(size * 0.45, size * 0.55, 2),
                "radii": rng.uniform(size * 0.36, size * 0.46, 2)}
        for k in range(2):
            image = _tissue(rng, shape, body)
            if label == "lesion":
                centre = body["centre"] + rng.uniform(-0.45, 0.45, 2) * body["radii"]
                radius = rng.uniform(4.0, 8.0)
                image = image + rng.uniform(0.35, 0.55) * _blob(shape, centre, radius,
                                                                ring=bool(rng.random() < 0.3))
            rel = f"{label}/p{p:03d}_{k}.png"
            _save_png(target / rel, _to_uint8(image))
            rows.append({"image": rel, "label": label, "patient_id": f"p{p:03d}"})
    _write_csv(target / "manifest.csv", rows, ["image", "label", "patient_id"])
    (target / "classes.txt").write_text("normal\nlesion\n", encoding="utf-8")


def _write_segmentation_2d(target: Path, *, seed: int = 12, cases: int = 40,
                           size: int = 64) -> None:
    rng = np.random.default_rng(seed)
    shape = (size, size)
    rows = []
    for n in range(cases):
        body = {"centre": rng.uniform(size * 0.45, size * 0.55, 2),
                "radii": rng.uniform(size * 0.38, size * 0.46, 2)}
        image = _tissue(rng, shape, body)
        mask = np.zeros(shape, dtype=np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            centre = body["centre"] + rng.uniform(-0.4, 0.4, 2) * body["radii"]
            radii = rng.uniform(3.5, 8.0, 2)
            coords = _grid(shape)
            inside = sum(((c - m) / a) ** 2 for c, m, a in zip(coords, centre, radii)) <= 1
            mask[inside] = 1
            image = image + rng.uniform(0.3, 0.5) * inside
        image = image + 0.02 * _texture(rng, shape, 1.0)
        cid = f"case_{n:03d}"
        _save_png(target / "images" / f"{cid}.png", _to_uint8(image))
        _save_png(target / "masks" / f"{cid}.png", mask)
        rows.append({"image": f"images/{cid}.png", "mask": f"masks/{cid}.png", "patient_id": cid})
    _write_csv(target / "manifest.csv", rows, ["image", "mask", "patient_id"])


def _write_segmentation_3d(target: Path, *, seed: int = 13, cases: int = 12,
                           size: int = 32) -> None:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    shape = (size, size, size)
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    training = []
    for n in range(cases):
        body = {"centre": rng.uniform(size * 0.45, size * 0.55, 3),
                "radii": rng.uniform(size * 0.38, size * 0.46, 3)}
        image = _tissue(rng, shape, body)
        centre = body["centre"] + rng.uniform(-0.35, 0.35, 3) * body["radii"]
        radii = rng.uniform(3.0, 6.0, 3)
        inside = sum(((c - m) / a) ** 2 for c, m, a in zip(_grid(shape), centre, radii)) <= 1
        image = image + rng.uniform(0.3, 0.45) * inside
        cid = f"sample_{n:03d}"
        (target / "imagesTr").mkdir(parents=True, exist_ok=True)
        (target / "labelsTr").mkdir(parents=True, exist_ok=True)
        volume = (np.clip(image, 0, None) * 1000).round().astype(np.int16)
        nib.save(nib.Nifti1Image(volume, affine), target / "imagesTr" / f"{cid}.nii.gz")
        nib.save(nib.Nifti1Image(inside.astype(np.uint8), affine),
                 target / "labelsTr" / f"{cid}.nii.gz")
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    meta = {"name": "medxfer-sample-3d", "description": "synthetic lesions in textured tissue",
            "licence": "Apache-2.0 (generated by medxfer.data.sample)", "tensorImageSize": "3D",
            "modality": {"0": "MR"}, "labels": {"0": "background", "1": "lesion"},
            "numTraining": cases, "numTest": 0, "training": training, "test": []}
    (target / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


_WRITERS = {"classification": _write_classification,
            "segmentation_2d": _write_segmentation_2d,
            "segmentation_3d": _write_segmentation_3d}
