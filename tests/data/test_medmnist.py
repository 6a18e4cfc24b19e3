"""MedMNIST npz files: label shapes, 2D/3D, channel order, the real files."""

from __future__ import annotations

import numpy as np
import pytest

from medxfer.data.medmnist import load_medmnist
from medxfer.errors import DataError


def _write(path, shape, labels_2d=True, n=(6, 2, 3)):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 255, (k, *shape), dtype=np.uint8)
        lab = np.arange(k) % 2
        arrays[f"{split}_labels"] = lab[:, None] if labels_2d else lab
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("labels_2d", [True, False])
def test_label_shapes(tmp_path, labels_2d):
    data = load_medmnist(_write(tmp_path / "toymnist.npz", (28, 28), labels_2d))
    assert data.labels["train"].shape == (6,) and data.images["train"].shape == (6, 1, 28, 28)
    assert data.spatial_dims == 2 and data.class_names == ["0", "1"]


def test_rgb_and_3d(tmp_path):
    rgb = load_medmnist(_write(tmp_path / "pathmnist.npz", (28, 28, 3)))
    assert rgb.images["val"].shape == (2, 3, 28, 28)
    vol = load_medmnist(_write(tmp_path / "organmnist3d.npz", (28, 28, 28)))
    assert vol.spatial_dims == 3 and vol.images["test"].shape == (3, 1, 28, 28, 28)


def test_not_medmnist(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match=r"other\.npz.*lacks 'train_images'"):
        load_medmnist(tmp_path / "other.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"broken\.npz"):
        load_medmnist(tmp_path / "broken.npz")


@pytest.mark.parametrize("name,shape,n_train", [
    ("breastmnist", (1, 28, 28), 546), ("pneumoniamnist", (1, 28, 28), 4708),
    ("adrenalmnist3d", (1, 28, 28, 28), 1188), ("adrenalmnist3d_64", (1, 64, 64, 64), 1188)])
def test_real_files(shared_data, name, shape, n_train):
    data = load_medmnist(shared_data / "medmnist" / f"{name}.npz")
    assert data.images["train"].shape == (n_train, *shape)
    assert data.labels["train"].ndim == 1 and set(np.unique(data.labels["train"])) == {0, 1}
    assert len(data.class_names) == 2
