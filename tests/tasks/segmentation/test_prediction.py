"""Segmentation predict: masks on each input's own grid, in its own format, never overwritten.

The runs here are made without training: a config and weights written as `medxfer run`
writes them. The network is a fixed "oracle" (class 1 where the intensity, scaled to [0, 1], is
above 0.5), so a mask that lands on the wrong grid after inverting the preprocessing shows
up as a low overlap with the bright box drawn into the input.
"""

from __future__ import annotations

import csv
import sys
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

import medxfer
from medxfer.config import load_config, write_resolved_config
from medxfer.data.readers import read_image
from medxfer.training.checkpoints import save_model
from medxfer.workflows.predict import load_run
from medxfer.tasks.segmentation.prediction import SUMMARY_NAME, predict_masks
from medxfer.errors import ConfigError, DataError
from medxfer.models import SegmentationModel, SegmentationNetwork

CPU = torch.device("cpu")


def oracle_seg(in_channels: int, spatial_dims: int, num_classes: int,
               pretrained: str = "none") -> SegmentationModel:
    """A 1x1 convolution: logits ``[0, x - 0.5, -1 ...]`` from the mean channel ``x``."""
    conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(in_channels, num_classes, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(-1.0)
        conv.bias[0] = 0.0
        conv.weight[1] = 1.0 / in_channels
        conv.bias[1] = -0.5
    return SegmentationModel(conv, encoder_groups=[conv], encoder_path=[conv], feature_dim=1,
                             spatial_dims=spatial_dims, in_channels=in_channels,
                             num_classes=num_classes, size_divisor=1)


class _OraclePlugin:
    @medxfer.hookimpl
    def medxfer_register_backbones(self, register):
        register("oracle_seg", oracle_seg, description="test segmentation network")


@pytest.fixture(scope="module")
def registries():
    manager = medxfer.create_plugin_manager()
    manager.register(_OraclePlugin(), name="tests:oracle_seg")
    return medxfer.build_registries(manager)


def make_run(run_dir, registries, overrides, *, spatial_dims=3, in_channels=1, num_classes=2):
    """A finished-looking segmentation run folder (config, weights, sidecar)."""
    config = load_config(None, ["task=segmentation", "model.backbone.name=oracle_seg",
                                "model.backbone.pretrained=none", *overrides])
    write_resolved_config(config, run_dir)
    model = SegmentationNetwork(oracle_seg(in_channels, spatial_dims, num_classes))
    names = ["background", *[f"class{i}" for i in range(1, num_classes)]]
    save_model(run_dir, model, {"task": "segmentation", "num_classes": num_classes,
                                "class_names": names, "in_channels": in_channels,
                                "spatial_dims": spatial_dims, "imagenet_norm": False,
                                "backbone": config.model.backbone.model_dump()})
    return load_run(run_dir, registries=registries)


def oblique_affine() -> np.ndarray:
    """Rotation about two axes, anisotropic spacing (0.8, 1.3, 2.5 mm) and an offset."""
    a, b = np.deg2rad(25), np.deg2rad(-40)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-0.8, 1.3, 2.5])  # a flipped first axis, too
    affine[:3, 3] = [31.5, -12.25, 7.0]
    return affine


def box_volume(shape, box) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free dark volume with one bright off-centre box; returns (image, truth)."""
    truth = np.zeros(shape, dtype=np.uint8)
    truth[tuple(slice(lo, hi) for lo, hi in box)] = 1
    return (100.0 + 400.0 * truth).astype(np.float32), truth


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_nifti_mask_has_the_input_shape_affine_and_content(tmp_path, registries):
    loaded = make_run(tmp_path / "run", registries,
                      ["data.preprocess.orientation=RAS", "data.preprocess.spacing=[1.5,1.5,1.5]",
                       "data.preprocess.intensity=minmax"])
    shape, affine = (40, 27, 15), oblique_affine()
    image, truth = box_volume(shape, [(5, 17), (14, 24), (2, 8)])
    src = tmp_path / "in" / "case_01.nii.gz"
    src.parent.mkdir()
    nib.save(nib.Nifti1Image(image, affine), str(src))

    records = predict_masks(loaded, [src], tmp_path / "out", device=CPU)

    out = tmp_path / "out" / "case_01_mask.nii.gz"
    assert records[0]["mask"] == str(out)
    mask_img = nib.load(str(out))
    assert mask_img.shape == shape
    assert np.allclose(mask_img.affine, nib.load(str(src)).affine, atol=1e-5)
    mask = np.asarray(mask_img.dataobj)
    assert mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 1}
    assert dice(mask.astype(bool), truth.astype(bool)) > 0.85  # on the input's own grid
    assert records[0]["voxels"] == {"background": int((mask == 0).sum()),
                                    "class1": int((mask == 1).sum())}
    rows = list(csv.DictReader((tmp_path / "out" / SUMMARY_NAME).open()))
    assert rows[0]["input"] == str(src) and rows[0]["mask"] == str(out)
    assert int(rows[0]["voxels_class1"]) == int((mask == 1).sum())


def test_crop_and_resize_are_inverted_too(tmp_path, registries):
    loaded = make_run(tmp_path / "run", registries,
                      ["data.preprocess.spacing=[2.0,2.0,2.0]",
                       "data.preprocess.crop_size=[24,24,24]",
                       "data.preprocess.image_size=[16,20,12]",
                       "data.preprocess.intensity=minmax"])
    image, truth = box_volume((30, 22, 18), [(3, 14), (4, 13), (2, 9)])
    src = tmp_path / "vol.nii"
    affine = np.diag([1.1, -0.9, 1.7, 1.0])
    affine[:3, 3] = [-4, 9, 2]
    nib.save(nib.Nifti1Image(image, affine), str(src))
    predict_masks(loaded, [src], tmp_path / "out", device=CPU)
    out = nib.load(str(tmp_path / "out" / "vol_mask.nii.gz"))
    assert out.shape == image.shape and np.allclose(out.affine, affine, atol=1e-5)
    assert dice(np.asarray(out.dataobj).astype(bool), truth.astype(bool)) > 0.65


def test_nrrd_and_mha_keep_origin_spacing_direction(tmp_path, registries):
    import SimpleITK as sitk

    loaded = make_run(tmp_path / "run", registries,
                      ["data.preprocess.spacing=[1.0,1.0,1.0]", "data.preprocess.intensity=minmax"])
    image, truth = box_volume((14, 20, 9), [(2, 8), (10, 17), (3, 7)])  # (x, y, z)
    itk = sitk.GetImageFromArray(np.ascontiguousarray(image.transpose()))
    itk.SetSpacing((0.7, 1.2, 2.0))
    itk.SetOrigin((5.0, -3.0, 11.0))
    itk.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sources = [tmp_path / "a.nrrd", tmp_path / "b.mha"]
    for src in sources:
        sitk.WriteImage(itk, str(src))
    predict_masks(loaded, sources, tmp_path / "out", device=CPU)
    for name in ("a_mask.nrrd", "b_mask.mha"):
        out = sitk.ReadImage(str(tmp_path / "out" / name))
        assert out.GetSize() == itk.GetSize()
        assert np.allclose(out.GetSpacing(), itk.GetSpacing())
        assert np.allclose(out.GetOrigin(), itk.GetOrigin())
        assert np.allclose(out.GetDirection(), itk.GetDirection())
        mask = read_image(tmp_path / "out" / name).array[0]
        assert dice(mask.astype(bool), truth.astype(bool)) > 0.8


def test_png_round_trip_keeps_the_size(tmp_path, registries):
    from PIL import Image

    loaded = make_run(tmp_path / "run", registries,
                      ["data.preprocess.image_size=[32,32]", "data.preprocess.intensity=minmax",
                       "data.preprocess.channels=grey"], spatial_dims=2)
    rgb = np.full((45, 70, 3), 20, dtype=np.uint8)
    rgb[4:22, 40:65] = 230
    src = tmp_path / "photo.png"
    Image.fromarray(rgb).save(src)
    predict_masks(loaded, [src], tmp_path / "out", device=CPU)
    with Image.open(tmp_path / "out" / "photo_mask.png") as out:
        assert out.size == (70, 45)
        mask = np.asarray(out)
    assert dice(mask.astype(bool), rgb[..., 0] > 100) > 0.9


def test_never_overwrites_and_refuses_clashing_names(tmp_path, registries):
    loaded = make_run(tmp_path / "run", registries, [], spatial_dims=2)
    src = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "img_mask.png").write_bytes(b"keep")
    with pytest.raises(ConfigError, match="img_mask.png"):
        predict_masks(loaded, [src], out_dir, device=CPU)
    assert (out_dir / "img_mask.png").read_bytes() == b"keep"
    (tmp_path / "b").mkdir()
    twin = tmp_path / "b" / "img.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(twin)
    with pytest.raises(ConfigError, match="would both write"):
        predict_masks(loaded, [src, twin], tmp_path / "other", device=CPU)
    predict_masks(loaded, [src], tmp_path / "third", device=CPU)
    with pytest.raises(ConfigError, match=SUMMARY_NAME):
        predict_masks(loaded, [twin], tmp_path / "third", device=CPU)


def test_wrong_dimensionality_and_unreadable_inputs(tmp_path, registries):
    from PIL import Image

    loaded = make_run(tmp_path / "run", registries, [])
    png = tmp_path / "flat.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(png)
    with pytest.raises(DataError, match="flat.png.*2D"):
        predict_masks(loaded, [png], tmp_path / "out", device=CPU)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="broken.nii.gz"):
        predict_masks(loaded, [broken], tmp_path / "out2", device=CPU)
    with pytest.raises(DataError, match="missing.nii.gz"):
        predict_masks(loaded, [tmp_path / "missing.nii.gz"], tmp_path / "out3", device=CPU)


@pytest.fixture
def t1post(shared_data):
    folder = shared_data / "dicom" / "PGBM-003" / "T1post"
    if not folder.is_dir():
        pytest.skip(f"DICOM series not available at {folder}")
    return folder


DICOM_RUN = ["data.preprocess.orientation=RAS", "data.preprocess.spacing=[1.0,1.0,6.5]",
             "data.preprocess.intensity=minmax"]


def test_dicom_series_gives_a_nifti_on_the_series_grid(tmp_path, registries, t1post):
    loaded = make_run(tmp_path / "run", registries, DICOM_RUN)
    records = predict_masks(loaded, [t1post], tmp_path / "out", device=CPU)
    series = read_image(t1post)
    out = nib.load(str(tmp_path / "out" / "T1post_mask.nii.gz"))
    assert out.shape == series.spatial_shape
    assert np.allclose(out.affine, series.affine, atol=1e-4)
    assert records[0]["dicom_seg"] is None
    assert 0 < records[0]["voxels"]["class1"] < np.prod(out.shape)


def test_dicom_seg_without_highdicom_says_how_to_install(tmp_path, registries, monkeypatch):
    loaded = make_run(tmp_path / "run", registries, [])
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(ConfigError, match="pip install highdicom"):
        predict_masks(loaded, [tmp_path / "x"], tmp_path / "out", device=CPU, dicom_seg=True)


def test_dicom_seg_frames_match_the_mask_slice_by_slice(tmp_path, registries, t1post):
    hd = pytest.importorskip("highdicom")
    import pydicom

    from medxfer.data.readers import list_dicom_series

    loaded = make_run(tmp_path / "run", registries, DICOM_RUN)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = predict_masks(loaded, [t1post], tmp_path / "out", device=CPU,
                                dicom_seg=True)
    # the study's patient name "PGBM-003" is copied as it is, without highdicom's warning
    assert not [w for w in caught if "person name" in str(w.message)]
    seg = hd.seg.segread(records[0]["dicom_seg"])
    assert seg.Modality == "SEG"
    assert str(seg.PatientName) == "PGBM-003"
    files = next(iter(list_dicom_series(t1post).values()))  # in the reader's slice order
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["class1"]
    frames = seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in sources],
                                               segment_numbers=[1])[..., 0]
    mask = np.asarray(nib.load(records[0]["mask"]).dataobj)  # (i, j, k) = (column, row, slice)
    assert frames.shape == (mask.shape[2], mask.shape[1], mask.shape[0])
    assert 0 < int(frames.sum())
    assert np.array_equal(frames, (mask == 1).transpose(2, 1, 0))


def test_a_single_frame_dicom_file_for_a_2d_run_gets_a_one_slice_mask(tmp_path, registries,
                                                                       t1post):
    """One DICOM file is a 2D image; its mask is written in the file's scanner geometry,
    as a one-slice NIfTI and (asked) a one-frame DICOM SEG."""
    from medxfer.data.readers import read_dicom_series

    source = sorted(t1post.iterdir())[5]
    loaded = make_run(tmp_path / "run", registries, ["data.preprocess.intensity=minmax"],
                      spatial_dims=2)
    hd = pytest.importorskip("highdicom")
    records = predict_masks(loaded, [source], tmp_path / "out", device=CPU, dicom_seg=True)
    out = nib.load(records[0]["mask"])
    assert out.shape == (512, 512, 1)
    assert np.allclose(out.affine, read_dicom_series([source]).affine, atol=1e-4)
    mask = np.asarray(out.dataobj)
    pixels = read_image(source).array[0]  # (rows, columns)
    scaled = (pixels - pixels.min()) / (pixels.max() - pixels.min())
    assert np.array_equal(mask[:, :, 0].T == 1, scaled > 0.5)  # the oracle's rule
    seg = hd.seg.segread(records[0]["dicom_seg"])
    frame = seg.get_pixels_by_source_instance([seg.ReferencedSeriesSequence[0]
                                               .ReferencedInstanceSequence[0]
                                               .ReferencedSOPInstanceUID],
                                              segment_numbers=[1])[0, ..., 0]
    assert np.array_equal(frame, mask[:, :, 0].T == 1)


def _nrrd_pair(folder):
    """A readable ``a.nrrd`` and a truncated ``broken.nrrd`` (its header reads, its data not)."""
    import SimpleITK as sitk

    folder.mkdir()
    image, _ = box_volume((10, 12, 6), [(2, 6), (3, 9), (1, 4)])
    itk = sitk.GetImageFromArray(np.ascontiguousarray(image.transpose()))
    good, broken = folder / "a.nrrd", folder / "broken.nrrd"
    sitk.WriteImage(itk, str(good))  # uncompressed
    data = good.read_bytes()
    broken.write_bytes(data[: len(data) - 200])
    return good, broken


def _tree(folder):
    """Every path under ``folder`` (hidden ones too) with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-folder"])
def test_an_unreadable_later_input_leaves_the_output_as_it_was(tmp_path, registries, existing):
    """All or nothing: the masks of the inputs before the bad one are not left behind (nor
    folders created for them), so the same call succeeds once the input is fixed."""
    from medxfer.io import default_mode

    loaded = make_run(tmp_path / "run", registries, ["data.preprocess.intensity=minmax"])
    good, broken = _nrrd_pair(tmp_path / "in")
    out = tmp_path / "results" / "masks"
    if existing:
        out.mkdir(parents=True)
        (out / "notes.txt").write_text("the user's own file")
        (out / ".hidden").write_bytes(b"\x00keep")
        before = _tree(tmp_path / "results")
    with pytest.raises(DataError, match="broken.nrrd"):
        predict_masks(loaded, [good, broken], out, device=CPU)
    if existing:
        assert _tree(tmp_path / "results") == before
    else:
        assert not (tmp_path / "results").exists()

    broken.write_bytes(good.read_bytes())  # the input fixed: the same call now succeeds
    records = predict_masks(loaded, [good, broken], out, device=CPU)
    assert [r["mask"] for r in records] == [str(out / "a_mask.nrrd"),
                                            str(out / "broken_mask.nrrd")]
    expected = {"a_mask.nrrd", "broken_mask.nrrd", SUMMARY_NAME}
    if existing:
        expected |= {"notes.txt", ".hidden"}
        assert (out / "notes.txt").read_text() == "the user's own file"
    assert {p.name for p in out.iterdir()} == expected
    for name in ("a_mask.nrrd", "broken_mask.nrrd", SUMMARY_NAME):
        assert (out / name).stat().st_mode & 0o777 == default_mode()
    if not existing:
        assert out.stat().st_mode & 0o777 == default_mode(directory=True)
    rows = list(csv.DictReader((out / SUMMARY_NAME).open()))
    assert [row["mask"] for row in rows] == [r["mask"] for r in records]


def test_a_folder_of_two_series_says_to_give_one_series_not_a_manifest_column(tmp_path,
                                                                              registries):
    from tests.data.datafiles import write_dicom_series

    loaded = make_run(tmp_path / "run", registries, [])
    volume = (np.arange(4 * 6 * 5).reshape(4, 6, 5) * 3).astype(np.int16)
    write_dicom_series(tmp_path / "two", volume, series_uid="1.2.3.4.100")
    write_dicom_series(tmp_path / "two", volume[:3], series_uid="1.2.3.4.200")
    with pytest.raises(DataError, match="holds 2 DICOM series") as exc:
        predict_masks(loaded, [tmp_path / "two"], tmp_path / "out", device=CPU)
    assert "give a folder that holds one series" in str(exc.value)
    assert "series_uid" not in str(exc.value)
