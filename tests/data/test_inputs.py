"""What `medxfer predict` reads from its inputs (medxfer/data/inputs.py): files and DICOM
series folders as given, datasets in any layout as their images."""

from __future__ import annotations

import numpy as np
import pytest

from medxfer.data.inputs import prediction_inputs
from medxfer.errors import DataError
from tests.data import layout_fixtures as F
from tests.data.datafiles import write_dicom_series, write_png


def test_files_and_series_folders_are_taken_as_given(tmp_path, tiny_volume):
    write_png(tmp_path / "a.png", np.zeros((4, 4)))
    write_dicom_series(tmp_path / "series", tiny_volume)
    files, notes = prediction_inputs([tmp_path / "a.png", tmp_path / "series",
                                      tmp_path / "missing.png"])
    assert files == [tmp_path / "a.png", tmp_path / "series", tmp_path / "missing.png"]
    assert notes == []


def test_class_folders_with_masks_give_their_images_only(tmp_path, shared_data):
    root = F.class_folders_with_masks(tmp_path / "busi", shared_data, n=6, second_masks=2)
    files, notes = prediction_inputs([root])
    assert len(files) == 6 and not any("_mask" in f.name for f in files)
    assert notes == [f"{str(root)!r}: read as folder (class folders benign/, malignant/): 6 "
                     "case images"]


def test_a_study_folder_gives_each_series(shared_data):
    files, _ = prediction_inputs([shared_data / "dicom" / "PGBM-003"])
    assert sorted(f.name for f in files) == ["FLAIRreg", "MaskTumor", "T1post", "T2reg"]


def test_channel_files_and_medmnist_are_refused(tmp_path, shared_data):
    root = F.nnunet_folder(tmp_path / "nn", shared_data, n=2, channels=2)
    with pytest.raises(DataError, match="one file per channel .*predict takes one file per "
                                        "image"):
        prediction_inputs([root])
    with pytest.raises(DataError, match="is a MedMNIST file"):
        prediction_inputs([shared_data / "medmnist" / "breastmnist.npz"])
