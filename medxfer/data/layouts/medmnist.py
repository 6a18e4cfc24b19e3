"""MedMNIST ``.npz`` files: their arrays are the cases, their train/val/test split is kept."""

from __future__ import annotations

from pathlib import Path

from medxfer.data.datalist import Datalist
from medxfer.data.medmnist import SPLITS, load_medmnist


def read_medmnist(path: Path) -> Datalist:
    """The cases of a MedMNIST file, ids ``<split>_<index>``.

    Raises:
        DataError: when the file is not a MedMNIST ``.npz``.
    """
    data = load_medmnist(path)
    cases = []
    for split in SPLITS:
        for i, label in enumerate(data.labels[split].tolist()):
            cid = f"{split}_{i:05d}"
            cases.append({"id": cid, "image": f"npz:{path.name}#{split}/{i}", "label": int(label),
                          "patient_id": cid, "domain": None, "split": split})
    return Datalist(data.name, "medmnist", str(path), "classification", cases,
                    data.class_names, data.spatial_dims, None, medmnist=data,
                    class_order="dataset", split_source="the file's train/val/test arrays")
