"""Labels are checked against their image before they are saved or trained on."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medxfer.errors import DataError
from medxfer.label.labels import check_label


@pytest.fixture
def case(repo_root):
    root = repo_root / "sample_data" / "segmentation_3d"
    return root / "imagesTr" / "sample_000.nii.gz", root / "labelsTr" / "sample_000.nii.gz"


def _mask(path, like, data=None, affine=None):
    image = nib.load(str(like))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) if data is None else data,
                             image.affine if affine is None else affine), str(path))
    return path


def test_a_label_of_the_image_passes(case):
    image, label = case
    check_label(image, label, 2, image_id="sample_000")


@pytest.mark.parametrize("kind, message", [
    ("shape", r"has shape \(32, 32, 32\) but its mask '\(the uploaded label\)' has shape"),
    ("geometry", "different geometry: spacing"),
    ("class", "holds class 2, but the models know classes 0..1"),
    ("negative", "holds class -1"),
    ("fraction", "not class indices"),
    ("channels", "has 2 channels"),
    ("unreadable", "not a readable mask"),
])
def test_a_label_that_does_not_fit_is_refused_with_the_reason(case, tmp_path, kind, message):
    image, label = case
    shape = nib.load(str(image)).shape
    path = tmp_path / "bad.nii.gz"
    if kind == "shape":
        _mask(path, label, np.zeros((16, 16, 16), np.uint8))
    elif kind == "geometry":
        affine = nib.load(str(label)).affine.copy()
        affine[:3, 3] += 5.0
        _mask(path, label, affine=affine)
    elif kind == "class":
        _mask(path, label, np.full(shape, 2, np.uint8))
    elif kind == "negative":
        _mask(path, label, np.full(shape, -1, np.int16))
    elif kind == "fraction":
        _mask(path, label, np.full(shape, 0.5, np.float32))
    elif kind == "channels":
        _mask(path, label, np.zeros((*shape, 2), np.uint8))
    else:
        path.write_bytes(b"not a nifti file")
    with pytest.raises(DataError, match=message) as caught:
        check_label(image, path, 2, image_id="sample_000")
    assert "the label of image 'sample_000'" in str(caught.value)
    assert str(tmp_path) not in str(caught.value)
