"""A monai-bundle export runs with MONAI's bundle tools alone and reproduces medxfer.

Tolerance: segmentation masks equal ``medxfer predict``'s on at least 99.9% of voxels
(they were identical in every case measured); classification probabilities within 1e-5;
regression values within 1e-5 of what ``medxfer predict`` writes (6 decimals).
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medxfer.workflows.predict import load_run
from medxfer.tasks.segmentation.prediction import predict_masks
from medxfer.workflows.export import export_run
from medxfer.workflows.export.common import ExportError
from tests.workflows.export.helpers import CLS_2D, SEG_3D, make_run, write_volume


def _write_pngs(folder, count=3):
    """``count`` random 8-bit PNGs of an odd size (40x48, not the run's 32x32)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _bundle_csv(out):
    """The bundle's ``predictions.csv`` as ``{file name: [values]}``."""
    rows = list(csv.reader((out / "predictions.csv").open()))
    return {row[0].split("/")[-1]: [float(v) for v in row[1:]] for row in rows}


def _run_bundle(bundle, images, out):
    """``monai.bundle.run`` (what ``python -m monai.bundle run`` calls)."""
    from monai.bundle import run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(bundle_root=str(bundle), config_file=str(bundle / "configs" / "inference.json"),
            meta_file=str(bundle / "configs" / "metadata.json"), dataset_dir=str(images),
            output_dir=str(out), logging_file=False)  # leave this process's logging alone
    assert torch.is_grad_enabled()  # the bundle leaves the process as it found it


@pytest.mark.parametrize("window", [None, [16, 16, 16]], ids=["whole-image", "sliding-window"])
def test_segmentation_bundle_reproduces_medxfer_predict(tmp_path, window):
    overrides = list(SEG_3D)
    if window:
        overrides.append(f"eval.sliding_window.roi_size={window}")
    run = make_run(tmp_path / "run", overrides, spatial_dims=3, num_classes=3)
    images = tmp_path / "images"
    paths = [write_volume(images / "a.nii.gz", (27, 35, 19), seed=1),
             write_volume(images / "b.nii.gz", (40, 24, 30), seed=2)]
    result = export_run(run.run_dir, "monai-bundle", tmp_path / "bundle")
    bundle = result.output
    assert (bundle / "models" / "model.ts").is_file()
    meta = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 3
    config = json.loads((bundle / "configs" / "inference.json").read_text(encoding="utf-8"))
    targets = [t["_target_"] for t in config["preprocessing"]["transforms"]]
    assert ("DivisiblePadd" in targets) == (window is None)
    assert config["inferer"]["_target_"] == ("SlidingWindowInferer" if window else "SimpleInferer")

    _run_bundle(bundle, images, tmp_path / "bundle_out")
    predict_masks(load_run(run.run_dir), paths, tmp_path / "medxfer_out", device="cpu")
    for path in paths:
        stem = path.name.split(".")[0]
        ours = nib.load(str(tmp_path / "medxfer_out" / f"{stem}_mask.nii.gz"))
        theirs = nib.load(str(tmp_path / "bundle_out" / f"{stem}_seg.nii.gz"))
        a = np.asarray(ours.dataobj)
        b = np.asarray(theirs.dataobj).reshape(a.shape)
        assert theirs.shape[:3] == a.shape == nib.load(str(path)).shape
        assert np.allclose(theirs.affine, ours.affine, atol=1e-5)
        assert len(np.unique(a)) > 1  # a real test: the untrained net predicts several classes
        assert (a == b).mean() >= 0.999


def test_classification_bundle_reproduces_probabilities(tmp_path):
    from medxfer.data import inference_transform

    run = make_run(tmp_path / "run", CLS_2D, spatial_dims=2, num_classes=2)
    images = tmp_path / "images"
    paths = _write_pngs(images)
    export_run(run.run_dir, "monai-bundle", tmp_path / "bundle")
    meta = json.loads((tmp_path / "bundle" / "configs" / "metadata.json")
                      .read_text(encoding="utf-8"))
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["type"] == "probabilities" and pred["value_range"] == [0, 1]
    assert pred["num_channels"] == 2 and meta["medxfer"]["class_names"] == ["background",
                                                                            "class1"]
    _run_bundle(tmp_path / "bundle", images, tmp_path / "out")
    got = _bundle_csv(tmp_path / "out")
    columns = meta["medxfer"]["predictions_csv_columns"]
    assert all(len(values) == len(columns) - 1 for values in got.values())  # file, then probs
    transform = inference_transform(run.config, imagenet_norm=False, spatial_dims=2)
    for path in paths:
        with torch.no_grad():
            expected = torch.softmax(run.model(transform(str(path))[None]), dim=1)[0]
        assert np.allclose(got[path.name], expected.numpy(), atol=1e-5), (path, got)


def test_regression_bundle_writes_what_medxfer_predict_writes(tmp_path, reg_run):
    """No softmax on a regression output: the bundle's value is the network's own."""
    from medxfer.cli import main

    images = tmp_path / "images"
    paths = _write_pngs(images)
    export_run(reg_run.run_dir, "monai-bundle", tmp_path / "bundle")
    _run_bundle(tmp_path / "bundle", images, tmp_path / "out")
    got = _bundle_csv(tmp_path / "out")
    assert main(["predict", "--run", str(reg_run.run_dir), *map(str, paths),
                 "--output", str(tmp_path / "predict.csv")]) == 0
    with (tmp_path / "predict.csv").open(newline="", encoding="utf-8") as handle:
        expected = {Path(row["file"]).name: float(row["prediction"])
                    for row in csv.DictReader(handle)}
    assert len({round(v, 5) for v in expected.values()}) == len(paths)  # a real test
    for path in paths:
        assert got[path.name] == pytest.approx([expected[path.name]], abs=1e-5), (path, got)


def test_regression_bundle_describes_one_value_not_probabilities(tmp_path, reg_run):
    bundle = export_run(reg_run.run_dir, "monai-bundle", tmp_path / "bundle").output
    config = json.loads((bundle / "configs" / "inference.json").read_text(encoding="utf-8"))
    assert config["postprocessing"]["transforms"] == []
    meta = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["format"] == "regression" and pred["type"] != "probabilities"
    assert (pred["num_channels"], pred["value_range"], pred["is_onehot"]) == (1, [], False)
    assert pred["channel_def"] == {"0": "predicted value of 'label'"}
    assert meta["medxfer"]["target"] == "label" and "class_names" not in meta["medxfer"]
    readme = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    assert "probabilities" not in readme and "predicted value of `label`" in readme
    info = json.loads((bundle / "export.json").read_text(encoding="utf-8"))
    assert info["output"]["target"] == "label" and "class_names" not in info["output"]
    assert "softmax gives" not in info["output"]["meaning"]


def test_slice_wise_runs_are_refused_before_anything_is_written(tmp_path):
    run = make_run(tmp_path / "run", ["task=segmentation", "model.backbone.name=monai_unet",
                                      "model.backbone.channels=[4,8]",
                                      "model.backbone.strides=[2]", "data.slice_axis=2"],
                   spatial_dims=2, num_classes=2)
    with pytest.raises(ExportError, match="slice by slice"):
        export_run(run.run_dir, "monai-bundle", tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_classification_bundle_states_the_columns_of_its_headerless_csv(cls_run, tmp_path):
    """MONAI's CSVSaver writes no header: metadata and README say which column is which."""
    bundle = export_run(cls_run.run_dir, "monai-bundle", tmp_path / "bundle").output
    meta = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    columns = ["file", "prob_background", "prob_class1"]
    assert meta["medxfer"]["predictions_csv_columns"] == columns
    assert meta["medxfer"]["predictions_csv_header"] is False
    readme = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    assert "no header row" in readme
    assert "`file`, `prob_background`, `prob_class1`" in readme
