"""`medxfer data inspect --json` on every dataset in ../shared/data and on every fixture
layout: the right layout, task and counts, and the documented keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medxfer.cli.app import main
from medxfer.data.sample import ensure_sample_data
from tests.data import layout_fixtures as F

#: The keys docs/data-formats.md documents ("The JSON form"), in its order.
KEYS = ["schema_version", "path", "name", "layout", "layout_reason", "task", "cases",
        "classes", "class_order", "image_classes", "splits", "split_source", "missing_splits",
        "folds", "spatial_dims", "spatial_dims_found", "channels", "size", "spacing", "dtypes",
        "intensity", "foreground", "target", "modality", "patients", "excluded", "notices",
        "warnings", "problems", "cache"]


def inspect_json(path: Path, capsys, code: int = 0) -> dict:
    assert main(["data", "inspect", str(path), "--json", "--max-read", "4"]) == code, \
        capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _split_cases(report: dict) -> dict:
    return {s: v["cases"] for s, v in report["splits"].items()}


@pytest.mark.parametrize("name, task, splits, classes", [
    ("medmnist/pneumoniamnist.npz", "classification",
     {"train": 4708, "val": 524, "test": 624}, ["normal", "pneumonia"]),
    ("medmnist/breastmnist.npz", "classification", {"train": 546, "val": 78, "test": 156},
     ["malignant", "normal_benign"]),
    ("medmnist/adrenalmnist3d.npz", "classification",
     {"train": 1188, "val": 98, "test": 298}, ["normal", "hyperplasia"]),
    ("medmnist/adrenalmnist3d_64.npz", "classification",
     {"train": 1188, "val": 98, "test": 298}, ["normal", "hyperplasia"]),
    ("msd_hippocampus", "segmentation", {"all": 208}, ["background", "Anterior", "Posterior"]),
    ("dicom/PGBM-003", "unlabelled", {"all": 4}, []),
    ("dicom", "unlabelled", {"all": 4}, []),
])
def test_every_shared_dataset(shared_data, capsys, name, task, splits, classes):
    report = inspect_json(shared_data / name, capsys)
    assert list(report) == KEYS and report["schema_version"] == 1
    assert (report["task"], _split_cases(report), report["classes"]) == (task, splits, classes)
    assert report["problems"] == [] and report["cases"] == sum(splits.values())
    cache = report["cache"]  # MedMNIST arrays as stored; volumes as float32 plus masks
    assert cache["bytes"] > 0 and cache["budget"] > 0 and 0 <= cache["in_memory"] <= 1
    assert cache["stored_as"].startswith("uint8 arrays" if name.startswith("medmnist")
                                         else "float32")
    assert report["size"]["source"] and report["intensity"]["source"]
    if task == "segmentation":  # every mask is read: every case holds both hippocampus parts
        assert report["splits"]["all"]["classes"] == {c: 208 for c in classes}
        assert report["foreground"]["masks"] == 208 and report["foreground"]["empty_masks"] == 0


def test_the_medmnist_folder_is_refused_naming_what_to_give(shared_data, capsys):
    assert main(["data", "inspect", str(shared_data / "medmnist"), "--json"]) == 2
    assert "holds 4 .npz files" in capsys.readouterr().err


FIXTURES = {
    "class folders + masks": (lambda t, s: F.class_folders_with_masks(t, s), "folder",
                              "segmentation", {"all": 12}),
    "class folders": (lambda t, s: F.class_folders(t, s, per_class=5), "folder",
                      "classification", {"all": 10}),
    "split folders": (lambda t, s: F.class_folders(t, s, per_class=3, split_folders=True),
                      "folder", "classification", {"train": 6, "val": 6, "test": 6}),
    "images + masks": (lambda t, s: F.images_masks(t, s, n=8), "images_masks", "segmentation",
                       {"all": 8}),
    "msd without dataset.json": (lambda t, s: F.msd_folder(t, s, n=6), "msd", "segmentation",
                                 {"all": 6}),
    "msd with dataset.json": (lambda t, s: F.msd_folder(t, s, n=6, dataset_json=True), "msd",
                              "segmentation", {"all": 6}),
    "nnU-Net, 2 channels": (lambda t, s: F.nnunet_folder(t, s, n=5, channels=2), "nnunet",
                            "segmentation", {"all": 5}),
    "MONAI datalist": (lambda t, s: F.monai_datalist(t, s), "monai_datalist", "segmentation",
                       {"train": 10, "val": 4, "test": 4}),
    "MONAI datalist, folds": (lambda t, s: F.monai_datalist(t, s, folds=True,
                                                            lists=("training", "testing")),
                              "monai_datalist", "segmentation", {"train": 10, "test": 4}),
    "manifest (sample data)": (lambda t, s: ensure_sample_data("classification"), "manifest",
                               "classification", {"all": 160}),
    "images folder": (lambda t, s: F.class_folders(t, s, per_class=3) / "malignant", "images",
                      "unlabelled", {"all": 3}),
}


@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_every_fixture_layout(fixture, shared_data, tmp_path, capsys):
    make, layout, task, splits = FIXTURES[fixture]
    report = inspect_json(make(tmp_path / "data", shared_data), capsys)
    assert list(report) == KEYS
    assert (report["layout"], report["task"], _split_cases(report)) == (layout, task, splits)
    assert report["problems"] == []
    if fixture == "class folders + masks":
        assert report["image_classes"] == ["benign", "malignant"]
        assert any("merged by union" in n for n in report["notices"])
    if fixture == "nnU-Net, 2 channels":
        assert report["channels"] == {"2": 5}
    if fixture == "msd without dataset.json":
        assert report["classes"] == ["background", "class 1", "class 2"]
        assert len(report["excluded"]) == 3  # a '._' file and two imagesTs/ images
    if fixture == "MONAI datalist, folds":
        assert report["folds"] == {str(k): 2 for k in range(5)}


def test_the_text_report_names_every_source_and_the_excluded_files(shared_data, tmp_path,
                                                                   capsys):
    root = F.msd_folder(tmp_path / "msd", shared_data, n=6)
    assert main(["data", "inspect", str(root), "--output", str(tmp_path), "--max-read",
                 "2"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())  # table cells joined
    assert "all voxels of 2 of 6 cases (a seeded sample; --max-read reads more)" in out
    assert "headers of every case" in out and "every mask, read whole" in out
    assert "3 files not used" in out and "a test image without a label" in out


def test_the_json_form_is_documented_key_by_key(repo_root):
    text = (repo_root / "docs" / "data-formats.md").read_text(encoding="utf-8")
    section = text.split("### The JSON form of `medxfer data inspect --json`")[1]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = {key.strip(" `") for row in rows for key in row.split(",")}
    assert documented == set(KEYS)
