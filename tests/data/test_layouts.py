"""Layouts people download, recognised without configuration (medxfer/data/layouts/), each
from a fixture written out of the real data; and the readings refused as ambiguous."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medxfer.data.layouts import build_datalist, detect_format
from medxfer.data.layouts import detect_layout
from medxfer.errors import DataError
from tests.data import layout_fixtures as F
from tests.data.datafiles import write_nifti, write_png


def _pngs(root, names, value=0):
    for i, name in enumerate(names):
        write_png(root / name, np.full((8, 8), value + i, np.uint8))


def test_class_folders_with_masks_beside_the_images_are_segmentation(tmp_path, shared_data):
    """Before: every NAME_mask.png was an image of its class (twice the cases)."""
    root = F.class_folders_with_masks(tmp_path / "busi", shared_data, n=12, second_masks=3)
    dl = build_datalist(root)
    assert (dl.format, dl.task, len(dl.cases)) == ("folder", "segmentation", 12)
    assert all("_mask" not in c["image"].rsplit("/", 1)[1] for c in dl.cases)
    assert {c["class"] for c in dl.cases} == {"benign", "malignant"}
    assert dl.image_classes == ["benign", "malignant"]
    merged = [c for c in dl.cases if c.get("label_files")]
    assert len(merged) == 3 and all(len(c["label_files"]) == 2 for c in merged)
    assert any("3 images with several masks" in n and "union" in n for n in dl.notices)
    assert any("'class' key" in n for n in dl.notices)
    # a classification run reads the same folders by class, the masks left out (and said)
    as_classes = build_datalist(root, task="classification")
    assert as_classes.task == "classification" and len(as_classes.cases) == 12
    assert as_classes.class_names == ["benign", "malignant"]
    assert len(as_classes.excluded) == 15  # 12 masks and 3 second masks
    assert all("classification run reads the images only" in e["reason"]
               for e in as_classes.excluded)


def test_the_union_of_several_masks_is_read_as_one(tmp_path, shared_data):
    from medxfer.data.cases import read_case

    root = F.class_folders_with_masks(tmp_path / "busi", shared_data, n=2, second_masks=1)
    case = next(c for c in build_datalist(root).cases if c.get("label_files"))
    mask = read_case(case, "label").array
    first, second = (read_case({"label": f}, "label").array for f in case["label_files"])
    assert np.array_equal(mask, np.maximum(first, second)) and first.any() and second.any()


def test_masks_without_an_image_and_images_without_a_mask_are_excluded(tmp_path):
    _pngs(tmp_path / "a", ["x.png", "y.png"], 10)
    _pngs(tmp_path / "b", ["z.png", "orphan_mask.png"], 50)
    for name in ("a/x_mask.png", "b/z_Mask.png"):
        write_png(tmp_path / name, np.eye(8) * 255)
    (tmp_path / "a" / "notes.txt").write_text("x")
    dl = build_datalist(tmp_path)
    assert dl.task == "segmentation" and [c["id"] for c in dl.cases] == ["a/x", "b/z"]
    reasons = {e["file"].rsplit("/", 1)[-1]: e["reason"] for e in dl.excluded}
    assert "no mask beside it" in reasons["y.png"]
    assert "no image 'orphan' beside it" in reasons["orphan_mask.png"]
    assert "not an image file" in reasons["notes.txt"]


def test_class_folders_from_breastmnist(tmp_path, shared_data):
    root = F.class_folders(tmp_path / "breast", shared_data, per_class=6)
    dl = build_datalist(root)
    assert (dl.format, dl.task, dl.class_names) == ("folder", "classification",
                                                    ["malignant", "normal_benign"])
    assert len(dl.cases) == 12 and dl.class_order == "folders"


def test_split_folders_of_class_folders_are_the_split(tmp_path, shared_data):
    root = F.class_folders(tmp_path / "split", shared_data, per_class=4, split_folders=True)
    assert detect_layout(root) == ("folder", "split folders train/, val/, test/ of class "
                                             "folders")
    dl = build_datalist(root)
    assert {c["split"] for c in dl.cases} == {"train", "val", "test"}
    assert dl.split_source.startswith("the split folders") and dl.missing_splits == ()
    import shutil

    shutil.rmtree(root / "val")
    dl = build_datalist(root)
    assert dl.missing_splits == ("val",)
    assert any("no val folder" in n for n in dl.notices)


def test_images_and_masks_folders(tmp_path, shared_data):
    root = F.images_masks(tmp_path / "im", shared_data, n=6, mask_dir="annotations")
    write_png(root / "images" / "lonely.jpg", np.zeros((8, 8)))
    assert detect_format(root) == "images_masks"
    dl = build_datalist(root)
    assert (dl.task, len(dl.cases)) == ("segmentation", 6)
    assert all(c["label"].endswith("_mask.png") for c in dl.cases)
    assert [e["reason"] for e in dl.excluded] == ["no mask with the stem 'lonely' in annotations/"]


def test_images_and_masks_by_the_same_stem_and_other_extensions(tmp_path):
    for i in range(3):
        write_png(tmp_path / "images" / f"c{i}.jpg", np.full((8, 8), i * 40, np.uint8))
        write_nifti(tmp_path / "labels" / f"c{i}.nii.gz", np.zeros((8, 8), np.uint8))
    dl = build_datalist(tmp_path)
    assert dl.format == "images_masks" and [c["id"] for c in dl.cases] == ["c0", "c1", "c2"]
    assert all(c["label"].endswith(".nii.gz") for c in dl.cases)


def test_msd_without_dataset_json(tmp_path, shared_data):
    """Before: read as two classes, imagesTr and labelsTr."""
    root = F.msd_folder(tmp_path / "msd", shared_data, n=6, test_images=2)
    assert detect_layout(root) == ("msd", "imagesTr/ and labelsTr/ without dataset.json")
    dl = build_datalist(root)
    assert (dl.format, dl.task, len(dl.cases)) == ("msd", "segmentation", 6)
    assert dl.class_order == "assumed" and len(dl.test_images) == 2
    reasons = sorted(e["reason"] for e in dl.excluded)
    assert reasons[0].startswith("a hidden macOS resource file")
    assert all(r.startswith("a test image without a label") for r in reasons[1:])
    assert any("no dataset.json" in n for n in dl.notices)


def test_msd_with_dataset_json_lists_what_it_leaves_out(tmp_path, shared_data):
    root = F.msd_folder(tmp_path / "msd", shared_data, n=6, dataset_json=True)
    dl = build_datalist(root)
    assert dl.class_names == ["background", "Anterior", "Posterior"] and len(dl.cases) == 6
    assert len(dl.excluded) == 3  # the '._' file and two test images


@pytest.mark.parametrize("channels", [1, 2])
def test_nnunet_raw(tmp_path, shared_data, channels):
    root = F.nnunet_folder(tmp_path / "nn", shared_data, n=4, channels=channels)
    (root / "imagesTr" / "hippocampus_001_0000.nii.gz").rename(
        root / "imagesTr" / "hippocampus_001_0007.nii.gz")  # a case without its channel 0
    assert detect_format(root) == "nnunet"
    dl = build_datalist(root)
    assert (dl.task, len(dl.cases)) == ("segmentation", 3)
    assert dl.class_names == ["background", "Anterior", "Posterior"] and dl.modality == "MR"
    assert all(len(c.get("image_files") or [c["image"]]) == channels for c in dl.cases)
    assert any("lacks channel file(s) 0000" in e["reason"] for e in dl.excluded)
    if channels == 2:
        from medxfer.data.cases import read_case

        image = read_case(dl.cases[0])
        assert image.array.shape[0] == 2
        assert np.allclose(image.array[1], image.array[0] * 0.5)


def test_nnunet_names_without_dataset_json_and_mixed_names_refused(tmp_path):
    for case in ("a", "b"):
        write_nifti(tmp_path / "nn" / "imagesTr" / f"{case}_0000.nii.gz", np.zeros((4, 4, 4)))
        write_nifti(tmp_path / "nn" / "labelsTr" / f"{case}.nii.gz", np.zeros((4, 4, 4)))
    assert detect_layout(tmp_path / "nn") == ("nnunet", "imagesTr/ files with _0000 channel "
                                                        "suffixes")
    write_nifti(tmp_path / "nn" / "imagesTr" / "c.nii.gz", np.zeros((4, 4, 4)))
    with pytest.raises(DataError, match=r"fits two layouts: msd .* and nnunet .*data.format: msd "
                                        r"or data.format: nnunet"):
        detect_format(tmp_path / "nn")
    assert build_datalist(tmp_path / "nn", format="nnunet").format == "nnunet"


def test_monai_datalist_keeps_its_splits(tmp_path, shared_data):
    """Before: only 'training' was read, and re-split at random without a word."""
    path = F.monai_datalist(tmp_path / "md", shared_data)
    assert detect_format(path) == "monai_datalist"
    dl = build_datalist(path)
    counts = {s: sum(c["split"] == s for c in dl.cases) for s in ("train", "val", "test")}
    assert counts == {"train": 10, "val": 4, "test": 4} and dl.missing_splits == ()
    assert "training, validation, testing lists" in dl.split_source


def test_monai_datalist_fold_keys_and_a_missing_split(tmp_path, shared_data):
    from medxfer.config import RunConfig
    from medxfer.data.run_cases import split_datalist

    path = F.monai_datalist(tmp_path / "md", shared_data, folds=True, lists=("training",))
    dl = build_datalist(path)
    assert {c["fold"] for c in dl.cases} == {0, 1, 2, 3, 4} and dl.missing_splits == ("test",)
    config = RunConfig.model_validate({"task": "segmentation", "data": {
        "path": str(path), "split": {"fold": 2, "test_fraction": 0.2}}})
    cases = split_datalist(dl, config)
    assert {c["id"] for c in cases if c["split"] == "val"} == \
        {c["id"] for c in dl.cases if c["fold"] == 2}
    assert sum(c["split"] == "test" for c in cases) == 2  # drawn from training, 20%


def test_monai_datalist_classification_with_unlabelled_testing(tmp_path):
    _pngs(tmp_path, [f"i{i}.png" for i in range(6)])
    (tmp_path / "list.json").write_text(json.dumps({
        "training": [{"image": f"i{i}.png", "label": i % 2} for i in range(4)],
        "validation": [{"image": "i4.png", "label": 0}], "testing": ["i5.png"]}))
    dl = build_datalist(tmp_path / "list.json")
    assert (dl.format, dl.task, len(dl.cases)) == ("monai_datalist", "classification", 5)
    assert dl.missing_splits == ("test",) and dl.test_images[0].endswith("i5.png")


def test_a_folder_of_images(tmp_path):
    _pngs(tmp_path, ["a.png", "b.png"])
    dl = build_datalist(tmp_path)
    assert (dl.format, dl.task, len(dl.cases)) == ("images", "unlabelled", 2)


@pytest.mark.parametrize("extra, both", [
    (lambda root: _pngs(root / "images", ["a.png"]) or _pngs(root / "masks", ["a.png"]),
     r"images_masks .* and folder "),
    (lambda root: _pngs(root, ["loose.png"]), r"folder .* and images "),
    (lambda root: (root / "manifest.csv").write_text("image,label\ncats/1.png,0\n") and
     (root / "dataset.json").write_text("{}"), r"manifest .*beside dataset.json"),
])
def test_a_path_fitting_two_layouts_is_refused_naming_both(tmp_path, extra, both):
    _pngs(tmp_path, ["cats/1.png", "cats/2.png", "dogs/1.png"], 5)
    extra(tmp_path)
    with pytest.raises(DataError, match=rf"fits two layouts: {both}.*data.format"):
        build_datalist(tmp_path)


def test_the_layout_a_config_chooses_is_read(tmp_path):
    _pngs(tmp_path, ["cats/1.png", "dogs/1.png", "images/a.png", "masks/a.png"], 3)
    with pytest.raises(DataError, match="fits two layouts"):
        build_datalist(tmp_path)
    assert build_datalist(tmp_path, format="images_masks").task == "segmentation"
    assert build_datalist(tmp_path, format="folder").class_names[:2] == ["cats", "dogs"]


def test_a_manifest_beside_its_images_lists_the_unlisted_ones(tmp_path):
    _pngs(tmp_path / "imgs", ["a.png", "b.png", "c.png"])
    (tmp_path / "manifest.csv").write_text("image,label\nimgs/a.png,0\nimgs/b.png,1\n")
    dl = build_datalist(tmp_path)
    assert dl.format == "manifest" and len(dl.cases) == 2
    assert dl.excluded == [{"file": str(tmp_path / "imgs" / "c.png"),
                            "reason": "not listed in manifest.csv"}]


def test_a_folder_of_medmnist_files_says_to_give_one(tmp_path):
    from tests.helpers import fake_medmnist

    fake_medmnist(tmp_path / "a.npz")
    fake_medmnist(tmp_path / "b.npz")
    with pytest.raises(DataError, match=r"holds 2 .npz files .*give that file as data.path"):
        build_datalist(tmp_path)


def test_mask_like_dicom_series_are_named(shared_data):
    dl = build_datalist(shared_data / "dicom" / "PGBM-003")
    assert any("'MaskTumor' named like a mask" in n for n in dl.notices)
