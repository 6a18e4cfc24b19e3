"""`medxfer predict` on a segmentation run: masks into the --output folder.

The run's network comes from a fake installed plugin distribution (as a third party
would ship one), so the CLI finds it through its ordinary entry-point loading.
"""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest

from medxfer.cli import main
from medxfer.config import load_config, write_resolved_config
from medxfer.training.checkpoints import save_model
from tests.helpers import make_distribution

PLUGIN = """
import torch
from torch import nn

import medxfer
from medxfer.models import SegmentationModel


def cli_oracle_seg(in_channels, spatial_dims, num_classes, pretrained="none"):
    conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(in_channels, num_classes, 1)
    return SegmentationModel(conv, encoder_groups=[conv], encoder_path=[conv], feature_dim=1,
                             spatial_dims=spatial_dims, in_channels=in_channels,
                             num_classes=num_classes)


@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("cli_oracle_seg", cli_oracle_seg, description="test segmentation network")
"""


@pytest.fixture
def seg_run(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "cli-oracle", "0.1", {"cli_oracle": "cli_oracle_plugin"},
                      {"cli_oracle_plugin": PLUGIN})
    monkeypatch.syspath_prepend(str(site))
    import cli_oracle_plugin

    config = load_config(None, ["task=segmentation", "model.backbone.name=cli_oracle_seg",
                                "data.preprocess.spacing=[1.5,1.5,1.5]"])
    run = tmp_path / "run"
    write_resolved_config(config, run)
    from medxfer.models import SegmentationNetwork

    model = SegmentationNetwork(cli_oracle_plugin.cli_oracle_seg(1, 3, 3))
    save_model(run, model, {"task": "segmentation", "num_classes": 3,
                            "class_names": ["background", "anterior", "posterior"],
                            "in_channels": 1, "spatial_dims": 3, "imagenet_norm": False})
    yield run
    sys.modules.pop("cli_oracle_plugin", None)


def test_predict_writes_masks_for_a_segmentation_run(seg_run, tmp_path, capsys):
    affine = np.array([[0.0, -1.2, 0.0, 10.0], [0.9, 0.0, 0.0, -5.0],
                       [0.0, 0.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
    src = tmp_path / "case.nii.gz"
    data = np.random.default_rng(0).normal(size=(12, 10, 7)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), str(src))
    out = tmp_path / "masks"
    assert main(["predict", "--run", str(seg_run), str(src), "--output", str(out)]) == 0
    mask = nib.load(str(out / "case_mask.nii.gz"))
    assert mask.shape == (12, 10, 7) and np.allclose(mask.affine, affine, atol=1e-5)
    assert set(np.unique(np.asarray(mask.dataobj)).tolist()) <= {0, 1, 2}
    header = (out / "masks.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "input,mask,dicom_seg,voxels_background,voxels_anterior,voxels_posterior"
    # a second call would overwrite: refused with exit code 2, naming the file
    assert main(["predict", "--run", str(seg_run), str(src), "--output", str(out)]) == 2
    assert "masks.csv" in capsys.readouterr().err


def test_predict_segmentation_needs_an_output_folder(seg_run, tmp_path, capsys):
    assert main(["predict", "--run", str(seg_run), str(tmp_path / "x.nii.gz")]) == 2
    assert "--output" in capsys.readouterr().err


def test_a_failed_predict_leaves_no_output_and_can_be_rerun(seg_run, tmp_path, capsys):
    """An unreadable later input: exit 2 naming it, no --output folder left behind (not even
    the first input's mask), and the same command succeeds once the input is replaced."""
    import SimpleITK as sitk

    data = np.random.default_rng(1).normal(size=(9, 8, 6)).astype(np.float32)
    good, broken = tmp_path / "a.nrrd", tmp_path / "broken.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(data), str(good))
    raw = good.read_bytes()
    broken.write_bytes(raw[: len(raw) - 300])  # truncated
    out = tmp_path / "OUT"
    command = ["predict", "--run", str(seg_run), "--output", str(out), str(good), str(broken)]
    assert main(command) == 2
    assert "broken.nrrd" in capsys.readouterr().err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nrrd", "broken.nrrd", "run",
                                                          "site"]

    broken.write_bytes(raw)
    assert main(command) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.nrrd", "broken_mask.nrrd",
                                                     "masks.csv"]
    assert "wrote 2 masks" in capsys.readouterr().err


def test_an_input_too_small_for_the_network_names_what_predict_can_change(tmp_path, capsys):
    """monai_unet's size check hints at data.patch.size, which predict does not use: there
    the whole image (or the run's sliding window) sets the size, and the error says so."""
    from PIL import Image

    from medxfer.models import SegmentationNetwork
    from medxfer_plugins.backbones.monai_segmentation import monai_unet

    options = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}
    config = load_config(None, ["task=segmentation", "model.backbone.name=monai_unet",
                                *[f"model.backbone.{k}={v}" for k, v in options.items()]])
    run = tmp_path / "run"
    write_resolved_config(config, run)
    model = SegmentationNetwork(monai_unet(1, 2, 2, **options))
    save_model(run, model, {"task": "segmentation", "num_classes": 2, "in_channels": 1,
                            "class_names": ["background", "lesion"], "spatial_dims": 2,
                            "imagenet_norm": False})
    src = tmp_path / "small.png"
    Image.fromarray(np.arange(9, dtype=np.uint8).reshape(3, 3) * 20).save(src)
    out = tmp_path / "masks"
    command = ["predict", "--run", str(run), str(src), "--output", str(out)]
    assert main(command) == 2
    message = capsys.readouterr().err
    assert "backbone 'monai_unet' takes inputs whose sides are multiples of 4" in message
    assert "data.patch.size (or the image size)" not in message
    assert f"predict gives it the whole of {str(src)!r}" in message
    assert f"set eval.sliding_window.roi_size in {str(run / 'config.yaml')!r}" in message
    assert not out.exists()

    # what the message says to do works: a window the network takes
    write_resolved_config(load_config(run / "config.yaml",
                                      ["eval.sliding_window.roi_size=[8,8]"]), run)
    assert main(command) == 0, capsys.readouterr().err
    assert (out / "small_mask.png").is_file()


@pytest.mark.parametrize("layout", ["msd", "monai_datalist"])
def test_predict_takes_a_dataset_in_any_layout(seg_run, tmp_path, capsys, shared_data, layout):
    """Before: predict took image files and DICOM series folders only, and refused a MONAI
    datalist. Every case image (never a mask) and the unlabelled test images get a mask."""
    from tests.data import layout_fixtures as F

    if layout == "msd":
        data = F.msd_folder(tmp_path / "msd", shared_data, n=3, test_images=2)
        expected = 5
    else:
        data = F.monai_datalist(tmp_path / "md", shared_data, lists=("training",))
        expected = 10
    out = tmp_path / "masks"
    assert main(["predict", "--run", str(seg_run), str(data), "--output", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"read as {layout}" in err
    rows = (out / "masks.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(rows) == expected and not any("labels" in r.split(",")[0] for r in rows)
    assert len(list(out.glob("*_mask.nii.gz"))) == expected
