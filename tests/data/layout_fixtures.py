"""Datasets in the layouts people download, written at test time from the real data in
``../shared/data`` (never copied into the repository): Hippocampus (MSD Task04) slices as
PNG image/mask pairs, its volumes in MSD, nnU-Net and MONAI-datalist folders, and
BreastMNIST images saved per class folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from tests.data.datafiles import write_png

HIPPO = "msd_hippocampus"


def hippo_cases(shared: Path, n: int) -> list[tuple[Path, Path]]:
    """The first ``n`` (image, label) files of the shared Hippocampus set."""
    meta = json.loads((shared / HIPPO / "dataset.json").read_text())
    return [(shared / HIPPO / e["image"], shared / HIPPO / e["label"])
            for e in meta["training"][:n]]


def hippo_slices(shared: Path, n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``n`` axial Hippocampus slices: (name, uint8 image, int label map 0/1/2), each the
    slice of its volume with the most foreground."""
    import nibabel as nib

    out = []
    for image_file, label_file in hippo_cases(shared, n):
        image = np.asarray(nib.load(str(image_file)).dataobj, dtype=np.float32)
        label = np.asarray(nib.load(str(label_file)).dataobj).astype(np.uint8)
        k = int(np.argmax((label > 0).sum(axis=(0, 1))))
        sl = image[..., k]
        lo, hi = np.percentile(sl, [1, 99])
        grey = np.clip((sl - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
        out.append((image_file.name.split(".")[0], grey, label[..., k]))
    return out


def class_folders_with_masks(root: Path, shared: Path, *, n: int = 12,
                             second_masks: int = 3) -> Path:
    """The BUSI-style layout: ``benign/`` and ``malignant/`` each holding ``NAME.png`` with
    ``NAME_mask.png`` beside it (0/255); the first ``second_masks`` images keep their
    posterior part in a second mask, ``NAME_mask_1.png``."""
    for i, (name, image, label) in enumerate(hippo_slices(shared, n)):
        folder = root / ("benign" if i % 2 else "malignant")
        write_png(folder / f"{name}.png", image)
        if i < second_masks:
            write_png(folder / f"{name}_mask.png", (label == 1) * 255)
            write_png(folder / f"{name}_mask_1.png", (label == 2) * 255)
        else:
            write_png(folder / f"{name}_mask.png", (label > 0) * 255)
    return root


def class_folders(root: Path, shared: Path, *, per_class: int = 10,
                  split_folders: bool = False) -> Path:
    """BreastMNIST images saved per class folder (``malignant/``, ``normal_benign/``),
    optionally inside ``train/``, ``val/`` and ``test/`` split folders."""
    from medxfer.data.medmnist import load_medmnist

    data = load_medmnist(shared / "medmnist" / "breastmnist.npz")
    for split in ("train", "val", "test") if split_folders else ("train",):
        base = root / split if split_folders else root
        labels = data.labels[split]
        for label, name in enumerate(data.class_names):
            for j in np.flatnonzero(labels == label)[:per_class]:
                write_png(base / name / f"{split}_{j:04d}.png", data.images[split][j][0])
    return root


def images_masks(root: Path, shared: Path, *, n: int = 12, mask_dir: str = "masks") -> Path:
    """``images/NAME.png`` and ``<mask_dir>/NAME_mask.png`` (0/255) Hippocampus slices."""
    for name, image, label in hippo_slices(shared, n):
        write_png(root / "images" / f"{name}.png", image)
        write_png(root / mask_dir / f"{name}_mask.png", (label > 0) * 255)
    return root


def msd_folder(root: Path, shared: Path, *, n: int = 10, dataset_json: bool = False,
               test_images: int = 2) -> Path:
    """``imagesTr/`` + ``labelsTr/`` (+ ``imagesTs/`` and a macOS ``._`` file), with or
    without the ``dataset.json`` of the shared set (cut to these cases)."""
    cases = hippo_cases(shared, n + test_images)
    for image, label in cases[:n]:
        _copy(image, root / "imagesTr" / image.name)
        _copy(label, root / "labelsTr" / label.name)
    for image, _ in cases[n:]:
        _copy(image, root / "imagesTs" / image.name)
    (root / "imagesTr" / f"._{cases[0][0].name}").write_bytes(b"\0\5\26\7 apple double")
    if dataset_json:
        meta = json.loads((shared / HIPPO / "dataset.json").read_text())
        meta["training"] = meta["training"][:n]
        meta["test"] = [f"./imagesTs/{image.name}" for image, _ in cases[n:]]
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


def nnunet_folder(root: Path, shared: Path, *, n: int = 10, channels: int = 1) -> Path:
    """An nnU-Net raw dataset: ``imagesTr/hippocampus_XXX_000C.nii.gz`` (the second channel
    is the first scaled), ``labelsTr/hippocampus_XXX.nii.gz`` and ``dataset.json`` with
    ``channel_names``, ``labels`` and ``file_ending``."""
    import nibabel as nib

    for image, label in hippo_cases(shared, n):
        case = image.name.removesuffix(".nii.gz")
        _copy(image, root / "imagesTr" / f"{case}_0000.nii.gz")
        if channels > 1:
            img = nib.load(str(image))
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32) * 0.5, img.affine),
                     str(root / "imagesTr" / f"{case}_0001.nii.gz"))
        _copy(label, root / "labelsTr" / label.name)
    names = {"0": "MRI", "1": "MRI_half"} if channels > 1 else {"0": "MRI"}
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": names, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": n, "file_ending": ".nii.gz"}))
    return root


def monai_datalist(root: Path, shared: Path, *, folds: bool = False, lists=("training",
                   "validation", "testing")) -> Path:
    """``datalist.json`` with Hippocampus ``training`` (10 cases, ``fold`` 0-4 when
    ``folds``), ``validation`` (4) and ``testing`` (4) lists, paths relative to it."""
    cases = hippo_cases(shared, 18)
    for image, label in cases:
        _copy(image, root / "data" / "images" / image.name)
        _copy(label, root / "data" / "labels" / label.name)

    def entries(part, with_fold=False):
        return [{"image": f"data/images/{i.name}", "label": f"data/labels/{m.name}",
                 **({"fold": k % 5} if with_fold else {})} for k, (i, m) in enumerate(part)]

    content = {"training": entries(cases[:10], folds)}
    if "validation" in lists:
        content["validation"] = entries(cases[10:14])
    if "testing" in lists:
        content["testing"] = entries(cases[14:18])
    (root / "datalist.json").write_text(json.dumps(content))
    return root / "datalist.json"


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
