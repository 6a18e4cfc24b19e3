"""Readers: NIfTI, PNG, NRRD/MHA, DICOM series; geometry; every bad-input error."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from medxfer.data.cases import read_case
from medxfer.data.readers import (case_series_uid, check_same_geometry, list_dicom_series,
                                  read_dicom_series, read_image)
from medxfer.errors import DataError
from tests.data.datafiles import write_dicom_series, write_nifti, write_png


def test_nifti_array_and_geometry(tmp_path):
    vol = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    img = read_image(write_nifti(tmp_path / "a.nii.gz", vol, spacing=(1.5, 2.0, 3.0)))
    assert img.array.shape == (1, 5, 6, 7)
    np.testing.assert_allclose(img.array[0], vol)
    assert img.spacing == pytest.approx((1.5, 2.0, 3.0))
    assert img.spatial_dims == 3


def test_nifti_4d_last_axis_is_channels(tmp_path):
    vol = np.zeros((4, 5, 6, 2), dtype=np.float32)
    vol[..., 1] = 1
    img = read_image(write_nifti(tmp_path / "m.nii.gz", vol))
    assert img.array.shape == (2, 4, 5, 6)
    assert img.array[1].min() == 1


def test_png_grey_and_rgb(tmp_path):
    grey = read_image(write_png(tmp_path / "g.png", np.arange(12).reshape(3, 4)))
    assert grey.array.shape == (1, 3, 4) and grey.meta["dtype"] == "uint8"
    assert grey.array[0, 1, 0] == 4  # rows first, like matplotlib
    rgb = read_image(write_png(tmp_path / "c.png", np.zeros((3, 4, 3))))
    assert rgb.array.shape == (3, 3, 4)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_formats_match_nifti_convention(tmp_path, suffix, tiny_volume):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(tiny_volume)
    image.SetSpacing((0.5, 0.7, 2.0))
    sitk.WriteImage(image, str(tmp_path / f"v{suffix}"))
    img = read_image(tmp_path / f"v{suffix}")
    assert img.array.shape == (1, 5, 6, 4)  # (x, y, z)
    assert img.array[0, 2, 1, 3] == tiny_volume[3, 1, 2]
    assert img.spacing == pytest.approx((0.5, 0.7, 2.0))
    assert img.affine[0, 0] < 0 and img.affine[1, 1] < 0  # LPS identity is RAS-flipped


def test_dicom_series_geometry_and_rescale(tmp_path, tiny_volume):
    import pydicom

    files = write_dicom_series(tmp_path / "s", tiny_volume, spacing=(0.5, 0.5, 2.0),
                               slope=2.0, intercept=-100.0)
    img = read_dicom_series(tmp_path / "s")
    assert img.array.shape == (1, 5, 6, 4)
    assert img.spacing == pytest.approx((0.5, 0.5, 2.0))
    assert img.modality == "CT" and img.meta["PatientID"] == "PAT1"
    raw = pydicom.dcmread(str(files[1])).pixel_array
    np.testing.assert_array_equal(img.array[0, :, :, 1], (raw * 2.0 - 100).T)


def test_a_single_frame_dicom_file_is_a_2d_image_like_its_png(tmp_path, tiny_volume):
    """A radiograph (or one slice given alone) is 2D: rows x columns as stored, rescaled,
    with its pixel spacing; the folder of the same slices stays a volume."""
    import pydicom

    files = write_dicom_series(tmp_path / "s", tiny_volume, spacing=(0.5, 0.7, 2.0),
                               slope=2.0, intercept=-10.0)
    img = read_image(files[2])
    assert img.spatial_dims == 2 and img.array.shape == (1, 6, 5)
    raw = pydicom.dcmread(str(files[2])).pixel_array
    np.testing.assert_allclose(img.array[0], raw * 2.0 - 10.0)
    np.testing.assert_allclose(img.spacing, (0.7, 0.5))  # PixelSpacing: row, column
    assert img.modality == "CT" and img.meta["frames"] == 1
    assert read_image(tmp_path / "s").spatial_dims == 3


def test_dicom_folder_with_two_series_needs_a_uid(tmp_path, tiny_volume):
    write_dicom_series(tmp_path, tiny_volume, series_uid="1.2.3.4.100", description="first")
    write_dicom_series(tmp_path, tiny_volume[:3], series_uid="1.2.3.4.200", description="second")
    assert set(list_dicom_series(tmp_path)) == {"1.2.3.4.100", "1.2.3.4.200"}
    with pytest.raises(DataError, match=r"holds 2 DICOM series.*1\.2\.3\.4\.100.*first") as exc:
        read_image(tmp_path)
    # read_image's callers (medxfer predict) have no series_uid option: a folder of one series
    assert "give a folder that holds one series" in str(exc.value)
    assert "series_uid" not in str(exc.value)
    assert read_image(tmp_path, series_uid="1.2.3.4.200").array.shape == (1, 5, 6, 3)
    with pytest.raises(DataError, match="has no series"):
        read_image(tmp_path, series_uid="9.9")


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------


def test_truncated_nifti(tmp_path):
    path = write_nifti(tmp_path / "t.nii.gz", np.ones((20, 20, 20), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.nii\.gz.*not a readable NIfTI"):
        read_image(path)


@pytest.mark.parametrize("name", ["fake.png", "fake.nii.gz", "fake.nii", "fake.mha", "x.txt"])
def test_file_that_is_not_an_image(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"hello") if name.endswith(".gz") else b"not an image\n")
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "nope.nii.gz")


def test_dicom_without_pixel_data(tmp_path, tiny_volume):
    import pydicom

    files = write_dicom_series(tmp_path / "s", tiny_volume)
    ds = pydicom.dcmread(str(files[0]))
    del ds.PixelData
    ds.save_as(str(files[0]))
    with pytest.raises(DataError, match=rf"{files[0].name}.*without pixel data"):
        read_image(tmp_path / "s")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="holds no DICOM files"):
        read_dicom_series(tmp_path)
    with pytest.raises(DataError) as info:
        read_dicom_series(tmp_path)
    assert "sub-folders" not in str(info.value)


def test_study_folder_names_its_series_folders(tmp_path, tiny_volume):
    """A study or patient folder given where a series folder was meant says where they are."""
    write_dicom_series(tmp_path / "study" / "T1", tiny_volume, series_uid="1.2.3.4.100")
    write_dicom_series(tmp_path / "study" / "T2", tiny_volume, series_uid="1.2.3.4.200")
    with pytest.raises(DataError) as info:
        read_image(tmp_path / "study")
    text = str(info.value)
    assert "holds no DICOM files" in text and "give one series folder" in text
    assert repr(str(tmp_path / "study" / "T1")) in text
    assert repr(str(tmp_path / "study" / "T2")) in text


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_voxels(tmp_path, bad):
    vol = np.zeros((4, 4, 4), np.float32)
    vol[1, 2, 3] = bad
    with pytest.raises(DataError, match=r"v\.nii\.gz.*not finite"):
        read_image(write_nifti(tmp_path / "v.nii.gz", vol))


def test_image_and_mask_disagree(tmp_path):
    image = read_image(write_nifti(tmp_path / "i.nii.gz", np.zeros((4, 4, 4), np.float32)))
    small = read_image(write_nifti(tmp_path / "m1.nii.gz", np.zeros((4, 4, 3), np.uint8)))
    shifted = read_image(write_nifti(tmp_path / "m2.nii.gz", np.zeros((4, 4, 4), np.uint8),
                                     spacing=(2.0, 1.0, 1.0)))
    with pytest.raises(DataError, match=r"i\.nii\.gz.*shape.*m1\.nii\.gz"):
        check_same_geometry(image, small)
    with pytest.raises(DataError, match=r"different geometry: spacing"):
        check_same_geometry(image, shifted)


# ---------------------------------------------------------------------------------------
# the real DICOM study
# ---------------------------------------------------------------------------------------


def test_real_dicom_study(shared_data):
    study = shared_data / "dicom" / "PGBM-003"
    series = {name: read_image(study / name) for name in ("T1post", "FLAIRreg", "T2reg",
                                                          "MaskTumor")}
    for img in series.values():
        assert img.array.shape == (1, 512, 512, 24)
        assert img.spacing == pytest.approx((0.43, 0.43, 6.5), abs=0.01)
        assert img.meta["PatientID"] == "PGBM-003"
    mask = series["MaskTumor"]
    check_same_geometry(series["T1post"], mask)
    assert set(np.unique(mask.array).tolist()) == {0, 1}
    # the tumour is brighter than the brain around it on post-contrast T1
    t1 = series["T1post"].array[0]
    assert t1[mask.array[0] > 0].mean() > t1[t1 > 0].mean()


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_read_case_takes_an_empty_series_uid_as_none(tmp_path, tiny_volume, empty):
    write_dicom_series(tmp_path / "img", tiny_volume, series_uid="1.2.3.4.100")
    write_dicom_series(tmp_path / "mask", tiny_volume, series_uid="1.2.3.4.110")
    write_dicom_series(tmp_path / "mask", tiny_volume[:3], series_uid="1.2.3.4.111")
    case = {"id": "a", "image": str(tmp_path / "img"), "series_uid": empty,
            "label": str(tmp_path / "mask"), "label_series_uid": "1.2.3.4.111"}
    assert case_series_uid(case) is None
    assert read_case(case).array.shape == (1, 5, 6, 4)
    assert read_case(case, "label").array.shape == (1, 5, 6, 3)


@pytest.mark.parametrize("key, column", [("image", "'series_uid'"),
                                         ("label", "'label_series_uid'")])
def test_a_case_folder_of_two_series_names_the_case_and_its_manifest_column(tmp_path, tiny_volume,
                                                                           key, column):
    write_dicom_series(tmp_path / "two", tiny_volume, series_uid="1.2.3.4.100")
    write_dicom_series(tmp_path / "two", tiny_volume[:3], series_uid="1.2.3.4.200")
    write_dicom_series(tmp_path / "one", tiny_volume, series_uid="1.2.3.4.300")
    case = {"id": "PGBM-003", "image": str(tmp_path / "one"), "label": str(tmp_path / "one"),
            "series_uid": "", key: str(tmp_path / "two")}
    with pytest.raises(DataError) as exc:
        read_case(case, key)
    text = str(exc.value)
    what = "image" if key == "image" else "mask"
    assert "holds 2 DICOM series" in text and "1.2.3.4.200" in text
    assert f"the {what} series to read in the manifest's {column} column for case 'PGBM-003'" \
        in text
    assert "give a folder" not in text


def test_an_itk_header_read_turns_itk_warnings_off(tmp_path, tiny_volume):
    """ITK's and GDCM's warnings go straight to stderr; reading only a header (as
    ``data inspect`` does) must turn them off as reading the image does."""
    import SimpleITK as sitk

    from medxfer.data.headers import read_header

    sitk.WriteImage(sitk.GetImageFromArray(tiny_volume), str(tmp_path / "v.mha"))
    sitk.ProcessObject.SetGlobalWarningDisplay(True)
    header = read_header(tmp_path / "v.mha")
    assert header.spatial_shape == (5, 6, 4)
    assert not sitk.ProcessObject.GetGlobalWarningDisplay()
