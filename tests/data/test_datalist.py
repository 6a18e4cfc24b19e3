"""Datalists: format detection, manifests, MSD, class folders, DICOM folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medxfer.data.layouts import build_datalist, detect_format
from medxfer.errors import DataError
from tests.data.datafiles import write_nifti, write_png


def _pngs(root, names):
    for name in names:
        write_png(root / name, np.zeros((8, 8)))


def test_manifest_csv_with_patients_and_declared_order(tmp_path):
    _pngs(tmp_path, ["a.png", "b.png", "c.png"])
    (tmp_path / "manifest.csv").write_text(
        "image,label,patient_id,domain\na.png,normal,p1,siteA\nb.png,lesion,p1,siteA\n"
        "c.png,normal,p2,siteB\n")
    dl = build_datalist(tmp_path)
    assert dl.format == "manifest" and dl.task == "classification"
    assert dl.class_names == ["lesion", "normal"]  # sorted without a declared order
    (tmp_path / "classes.txt").write_text("normal\nlesion\n")
    dl = build_datalist(tmp_path / "manifest.csv")
    assert dl.class_names == ["normal", "lesion"]
    assert [c["label"] for c in dl.cases] == [0, 1, 0]
    assert [c["patient_id"] for c in dl.cases] == ["p1", "p1", "p2"]
    assert dl.cases[2]["domain"] == "siteB"


def test_manifest_json_segmentation_and_regression(tmp_path):
    _pngs(tmp_path, ["i.png", "m.png"])
    (tmp_path / "seg.json").write_text(json.dumps([{"image": "i.png", "mask": "m.png"}]))
    dl = build_datalist(tmp_path / "seg.json")
    assert dl.task == "segmentation" and dl.cases[0]["label"].endswith("m.png")
    (tmp_path / "reg.json").write_text(json.dumps({"data": [{"image": "i.png", "label": 1.5},
                                                            {"image": "m.png", "label": 2.25}]}))
    dl = build_datalist(tmp_path / "reg.json", task="regression")
    assert [c["label"] for c in dl.cases] == [1.5, 2.25]


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "abc"])
@pytest.mark.parametrize("task", ["regression", None])
def test_regression_targets_must_be_finite_numbers(tmp_path, bad, task):
    """A nan or inf target would make the loss nan and the run fail much later."""
    _pngs(tmp_path, ["a.png", "b.png"])
    (tmp_path / "m.csv").write_text(f"image,label\na.png,1.5\nb.png,{bad}\n")
    if task is None and bad == "abc":  # not a number: a class name
        assert build_datalist(tmp_path / "m.csv").task == "classification"
        return
    with pytest.raises(DataError, match=rf"m\.csv.*row 2: regression target '{bad}' is not a"):
        build_datalist(tmp_path / "m.csv", task=task)


def test_a_study_folder_of_dicom_series_is_detected(tmp_path):
    from tests.data.datafiles import write_dicom_series

    volume = np.zeros((4, 5, 3), np.int16)
    write_dicom_series(tmp_path / "patient" / "study" / "T1", volume, series_uid="1.2.3.4.1")
    write_dicom_series(tmp_path / "patient" / "study" / "T2", volume, series_uid="1.2.3.4.2")
    assert detect_format(tmp_path / "patient") == "dicom"
    assert len(build_datalist(tmp_path / "patient").cases) == 2


def test_wrong_format_for_the_path_says_what_it_needs(tmp_path):
    from medxfer.data.medmnist import read_npz

    _pngs(tmp_path, ["a.png"])
    (tmp_path / "m.csv").write_text("image,label\na.png,0\n")
    with pytest.raises(DataError, match=r"has no dataset.json, so it is not a Medical "
                                        r"Segmentation Decathlon folder"):
        build_datalist(tmp_path / "m.csv", format="msd")
    with pytest.raises(DataError, match=r"m\.csv' is not an \.npz file"):
        read_npz(tmp_path / "m.csv")


def test_manifest_path_that_does_not_exist(tmp_path):
    _pngs(tmp_path, ["a.png"])
    (tmp_path / "m.csv").write_text("image,label\na.png,0\nmissing.png,1\n")
    with pytest.raises(DataError, match=r"m\.csv.*row 2.*'missing\.png' does not exist"):
        build_datalist(tmp_path / "m.csv")
    with pytest.raises(DataError, match="does not exist"):
        build_datalist(tmp_path / "nowhere.csv")


def test_labels_outside_declared_classes(tmp_path):
    _pngs(tmp_path, ["a.png", "b.png"])
    (tmp_path / "m.csv").write_text("image,label\na.png,normal\nb.png,tumour\n")
    with pytest.raises(DataError, match="'tumour'.*not one of the declared data.classes"):
        build_datalist(tmp_path / "m.csv", classes=["normal", "lesion"])
    (tmp_path / "n.csv").write_text("image,label\na.png,0\nb.png,3\n")
    with pytest.raises(DataError, match="'3'.*not one of the declared"):
        build_datalist(tmp_path / "n.csv", classes=["a", "b"])


def test_class_folders(tmp_path):
    _pngs(tmp_path, ["cats/1.png", "cats/2.png", "dogs/1.png"])
    assert detect_format(tmp_path) == "folder"
    dl = build_datalist(tmp_path)
    assert dl.class_names == ["cats", "dogs"] and [c["label"] for c in dl.cases] == [0, 0, 1]
    assert len({c["id"] for c in dl.cases}) == 3


def test_msd_layout(tmp_path):
    for i in range(2):
        write_nifti(tmp_path / "imagesTr" / f"c{i}.nii.gz", np.zeros((4, 4, 4), np.float32))
        write_nifti(tmp_path / "labelsTr" / f"c{i}.nii.gz", np.zeros((4, 4, 4), np.uint8))
    meta = {"modality": {"0": "CT"}, "labels": {"0": "background", "2": "b", "1": "a"},
            "training": [{"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"}
                         for i in range(2)]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    dl = build_datalist(tmp_path)
    assert dl.format == "msd" and dl.modality == "CT" and dl.class_names == ["background", "a", "b"]
    assert [c["id"] for c in dl.cases] == ["c0", "c1"]
    meta["training"].append({"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/c0.nii.gz"})
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"training\[2\].*gone\.nii\.gz"):
        build_datalist(tmp_path)
    meta["training"].pop()
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="task is 'classification'"):
        build_datalist(tmp_path / "dataset.json", format="msd", task="classification")


def test_unknown_layout(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="cannot tell its layout"):
        detect_format(tmp_path)


def test_real_layouts(shared_data):
    hippo = build_datalist(shared_data / "msd_hippocampus")
    assert hippo.task == "segmentation" and len(hippo.cases) == 208
    assert hippo.class_names == ["background", "Anterior", "Posterior"] and hippo.modality == "MR"
    dicom = build_datalist(shared_data / "dicom" / "PGBM-003")
    assert dicom.format == "dicom"
    assert sorted(c["id"] for c in dicom.cases) == ["FLAIRreg", "MaskTumor", "T1post", "T2reg"]
    breast = build_datalist(shared_data / "medmnist" / "breastmnist.npz")
    assert breast.format == "medmnist" and len(breast.cases) == 780
    assert breast.cases[0]["image"] == "npz:breastmnist.npz#train/0"


def test_class_order_says_where_the_label_order_comes_from(tmp_path):
    """Orders only sorted from names (``folders``, ``sorted``) were declared by nobody."""
    from medxfer.data.datalist import IMPLICIT_CLASS_ORDERS

    _pngs(tmp_path / "folders", ["b/1.png", "a/2.png"])
    assert build_datalist(tmp_path / "folders").class_order == "folders"
    assert build_datalist(tmp_path / "folders", classes=["b", "a"]).class_order == "declared"
    _pngs(tmp_path, ["a.png", "b.png"])
    (tmp_path / "names.csv").write_text("image,label\na.png,normal\nb.png,lesion\n")
    assert build_datalist(tmp_path / "names.csv").class_order == "sorted"
    (tmp_path / "numbers.csv").write_text("image,label\na.png,1\nb.png,0\n")
    assert build_datalist(tmp_path / "numbers.csv").class_order == "numbers"
    (tmp_path / "classes.txt").write_text("normal\nlesion\n")
    assert build_datalist(tmp_path / "names.csv").class_order == "manifest"
    assert set(IMPLICIT_CLASS_ORDERS) == {"folders", "sorted"}


def test_labels_mixing_numbers_and_names_are_refused(tmp_path):
    """Before: ``0``, ``1``, ``malignant``, ``normal_benign`` silently made 4 classes."""
    _pngs(tmp_path, ["a.png", "b.png", "c.png", "d.png"])
    (tmp_path / "m.csv").write_text(
        "image,label\na.png,0\nb.png,malignant\nc.png,1\nd.png,normal_benign\n")
    with pytest.raises(DataError, match=r"m\.csv' mixes class numbers and class names.*"
                       r"numbers: '0' \(case 'a'\), '1' \(case 'c'\); names: 'malignant' "
                       r"\(case 'b'\), 'normal_benign' \(case 'd'\).*use one kind"):
        build_datalist(tmp_path / "m.csv")
    (tmp_path / "j.json").write_text(json.dumps([{"image": "a.png", "label": 0},
                                                 {"image": "b.png", "label": "lesion"}]))
    with pytest.raises(DataError, match="mixes class numbers and class names"):
        build_datalist(tmp_path / "j.json")
    # a declared order says what the numbers mean (they index it), as before
    (tmp_path / "classes.txt").write_text("malignant\nnormal_benign\n")
    dl = build_datalist(tmp_path / "m.csv")
    assert dl.class_names == ["malignant", "normal_benign"]
    assert [c["label"] for c in dl.cases] == [0, 0, 1, 1]
    (tmp_path / "classes.txt").unlink()
    dl = build_datalist(tmp_path / "m.csv", classes=["malignant", "normal_benign"])
    assert [c["label"] for c in dl.cases] == [0, 0, 1, 1]


def test_label_names_differing_only_in_case_are_refused(tmp_path):
    """Before: ``Malignant`` and ``malignant`` were two classes."""
    _pngs(tmp_path, ["a.png", "b.png", "c.png"])
    (tmp_path / "m.csv").write_text("image,label\na.png,malignant\nb.png,benign\nc.png,Malignant\n")
    with pytest.raises(DataError, match=r"m\.csv' has class labels that differ only in case "
                       r"\('malignant' \(case 'a'\), 'Malignant' \(case 'c'\)\).*spell each class"):
        build_datalist(tmp_path / "m.csv")
    (tmp_path / "classes.txt").write_text("benign\nmalignant\nMalignant\n")  # declared: kept
    assert build_datalist(tmp_path / "m.csv").class_names == ["benign", "malignant", "Malignant"]


def test_cli_inspect_refuses_mixed_labels(tmp_path, capsys):
    from medxfer.cli.app import main

    _pngs(tmp_path, ["a.png", "b.png"])
    (tmp_path / "manifest.csv").write_text("image,label\na.png,0\nb.png,lesion\n")
    assert main(["data", "inspect", str(tmp_path), "--output", str(tmp_path)]) == 2
    assert "mixes class numbers and class names" in capsys.readouterr().err


def test_one_dicom_folder_in_two_rows_is_a_case_per_series(tmp_path):
    """Two rows for one folder of two series had one id, so the run's own splits.csv
    could not be given back (``case ... is listed twice``)."""
    for name in ("study.png", "other.png"):
        write_png(tmp_path / name, np.zeros((4, 4), np.uint8))
    (tmp_path / "m.csv").write_text("image,label,series_uid\nstudy.png,0,1.2.3\n"
                                    "study.png,1,1.2.4\nother.png,0,\n")
    ids = [c["id"] for c in build_datalist(tmp_path / "m.csv").cases]
    assert ids == ["study.png#1.2.3", "study.png#1.2.4", "other.png"]
    (tmp_path / "d.csv").write_text("image,label\nstudy.png,0\nstudy.png,1\nother.png,0\n")
    with pytest.raises(DataError, match=r"image '.*study.png' is listed in more than one row"):
        build_datalist(tmp_path / "d.csv")
