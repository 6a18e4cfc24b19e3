"""The checks of every case before training (medxfer/data/checks.py), as `medxfer run
--check` and the start of `medxfer run` make them: refusals name the file or split and
what to do; warnings are shown once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medxfer.cli.app import main
from medxfer.config import RunConfig
from medxfer.data.checks import forget_notified
from medxfer.data.loading import load_data, network_inputs
from medxfer.errors import DataError, MedxferWarning
from tests.data.datafiles import write_png

CHECK = ["run", "--check", "--set", "model.backbone.name=basic_cnn",
         "--set", "model.backbone.pretrained=none", "--set", "strategy.name=full_finetune"]


@pytest.fixture(autouse=True)
def _fresh_notices():
    forget_notified()
    yield
    forget_notified()


def _config(path, task="classification", **data):
    return RunConfig.model_validate({"task": task, "data": {"path": str(path), **data}})


def _manifest(tmp_path, labels, splits=None, same=()):
    """A manifest of 8x8 PNGs, each its own content unless its index is in ``same``."""
    lines = ["image,label" + (",split" if splits else "")]
    for i, label in enumerate(labels):
        value = 7 if i in same else 10 * i + 1
        write_png(tmp_path / f"i{i}.png", np.full((8, 8), value, np.uint8))
        lines.append(f"i{i}.png,{label}" + (f",{splits[i]}" if splits else ""))
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "manifest.csv"


def test_a_one_class_dataset_is_refused_by_run_check(tmp_path, capsys):
    """Before: `run --check` said "valid", the run trained for minutes, then ended with a
    raw ValueError (probs must have shape [N, C] with C >= 2), exit 1, naming no file."""
    path = _manifest(tmp_path, ["normal"] * 12)
    assert main([*CHECK, "--set", f"data.path={path}"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "has one class only ('normal', 12 cases): a classifier needs at least two" in err
    assert "manifest.csv" in err and "Traceback" not in err


def test_a_validation_split_of_one_class_is_refused_naming_it(tmp_path):
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    path = _manifest(tmp_path, [0, 1, 0, 1, 0, 0, 0, 1], splits)
    with pytest.raises(DataError, match=r"the 'val' split holds one class only \('0', 2 cases\).*"
                                        r"the split comes from the manifest.csv split column"):
        network_inputs(_config(path), imagenet_norm=False)


def test_the_same_image_in_two_splits_is_refused(tmp_path):
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    path = _manifest(tmp_path, [0, 1, 0, 1, 0, 1, 0, 1], splits, same=(1, 7))
    with pytest.raises(DataError, match=r"i1\.png' \(case 'i1', train\) and .*i7\.png' \(case "
                                        r"'i7', test\) hold the same content"):
        load_data(_config(path), imagenet_norm=False)


def test_copies_with_different_labels_are_warned_naming_both(tmp_path):
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    path = _manifest(tmp_path, [0, 1, 0, 1, 0, 1, 0, 1], splits, same=(0, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_data(_config(path), imagenet_norm=False)
    shown = [str(w.message) for w in caught if issubclass(w.category, MedxferWarning)]
    assert any("1 image has an identical copy with another label" in m and "i0.png" in m
               and "i1.png" in m for m in shown), shown


def test_copies_within_one_split_and_few_validation_cases_are_warned_once(tmp_path):
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    path = _manifest(tmp_path, [0, 1, 0, 1, 0, 1, 0, 1], splits, same=(0, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_data(_config(path), imagenet_norm=False)
        load_data(_config(path), imagenet_norm=False)  # the same command again: once
    shown = [str(w.message) for w in caught if issubclass(w.category, MedxferWarning)]
    assert sum("1 image copies another image of the same split" in m for m in shown) == 1
    assert sum("class '0' has 1 validation case(s)" in m for m in shown) == 1


def _seg_manifest(tmp_path, masks, splits):
    lines = ["image,mask,split"]
    for i, mask in enumerate(masks):
        write_png(tmp_path / f"i{i}.png", np.full((8, 8), 10 * i + 1, np.uint8))
        write_png(tmp_path / f"m{i}.png", mask)
        lines.append(f"i{i}.png,m{i}.png,{splits[i]}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "manifest.csv"


def _blob(on=True):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 255 if on else 0
    return mask


def test_empty_masks_are_counted_and_warned(tmp_path):
    """Before: an all-empty mask trained with no warning."""
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    masks = [_blob(i not in (1, 2, 5)) for i in range(8)]
    with pytest.warns(MedxferWarning, match=r"3 of 8 masks are empty \(all background; train "
                                            r"2, val 1, test 0\)"):
        network_inputs(_config(_seg_manifest(tmp_path, masks, splits), task="segmentation"),
                       imagenet_norm=False)


def test_a_test_split_of_empty_masks_is_refused(tmp_path):
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    masks = [_blob(i < 6) for i in range(8)]
    with pytest.raises(DataError, match=r"every mask of the 'test' split is empty .*Dice"):
        network_inputs(_config(_seg_manifest(tmp_path, masks, splits), task="segmentation"),
                       imagenet_norm=False)


def test_a_mask_of_another_shape_is_refused_by_run_check(tmp_path, capsys):
    """Before: `run --check` read one image and said "valid"."""
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    masks = [_blob() for _ in range(8)]
    masks[6] = np.zeros((8, 9), np.uint8)
    path = _seg_manifest(tmp_path, masks, splits)
    assert main(["run", "--check", "--set", "task=segmentation", "--set",
                 "model.backbone.name=unet", "--set", f"data.path={path}"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "i6.png' has shape (8, 8) but its mask" in err and "m6.png' has shape (8, 9)" in err


def test_a_run_says_what_it_read_excluded_and_assumed(tmp_path, shared_data):
    from tests.data import layout_fixtures as F

    root = F.msd_folder(tmp_path / "msd", shared_data, n=12, test_images=1)
    with pytest.warns(MedxferWarning) as caught:
        network_inputs(_config(root, task="segmentation"), imagenet_norm=False)
    shown = [str(w.message) for w in caught]
    assert any("no dataset.json: each imagesTr/ file is a case" in m for m in shown)
    assert any("the masks hold the values [0, 1, 2], read as the classes 0 background, 1 "
               "class 1, 2 class 2" in m for m in shown)
    assert any(m.startswith("1 file not used (a test image without a label") for m in shown)


def test_masks_without_declared_classes_and_a_gap_in_their_values_are_refused(tmp_path):
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    masks = [(_blob() > 0).astype(np.uint8) for _ in range(8)]
    masks[3][0, 0] = 3
    with pytest.raises(DataError, match=r"m3\.png' \(case 'i3'\) holds label values \[3\] but no "
                                        r"mask holds 2.*data.classes"):
        load_data(_config(_seg_manifest(tmp_path, masks, splits), task="segmentation"),
                  imagenet_norm=False)
    config = _config(tmp_path / "manifest.csv", task="segmentation",
                     classes=["background", "a", "b", "c"])
    assert load_data(config, imagenet_norm=False).num_classes == 4


def test_a_mask_with_a_shifted_grid_is_refused_before_training(tmp_path):
    """Headers say it: the check reads no image voxels."""
    from tests.data.datafiles import write_nifti
    import nibabel as nib

    lines = ["image,mask,split"]
    for i, split in enumerate(["train"] * 4 + ["val"] * 2 + ["test"] * 2):
        vol = np.random.default_rng(i).random((8, 8, 8)).astype(np.float32)
        mask = (vol > 0.5).astype(np.uint8)
        write_nifti(tmp_path / f"v{i}.nii.gz", vol)
        affine = np.eye(4)
        affine[0, 3] = 5.0 if i == 5 else 0.0  # 5 mm off
        nib.save(nib.Nifti1Image(mask, affine), str(tmp_path / f"m{i}.nii.gz"))
        lines.append(f"v{i}.nii.gz,m{i}.nii.gz,{split}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"v5\.nii\.gz' and mask .*m5\.nii\.gz' have different "
                                        r"geometry.*origin \(0, 0, 0\) vs \(5, 0, 0\)"):
        network_inputs(_config(tmp_path / "manifest.csv", task="segmentation"),
                       imagenet_norm=False)
