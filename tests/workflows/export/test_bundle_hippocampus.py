"""A bundle exported from a run trained on MSD Hippocampus (../shared/data) runs through
MONAI's ConfigWorkflow in a process where ``import medxfer`` fails, and its masks equal
``medxfer predict``'s voxel for voxel (sliding-window inference over whole volumes)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medxfer.cli import main
from medxfer.config import load_config
from medxfer.workflows.export import export_run
from medxfer.workflows.run import run_pipeline

pytestmark = pytest.mark.slow

RUNNER = Path(__file__).parent / "bundle_runner.py"
#: Cases per split from configs/hippocampus_split.csv: enough for a run that predicts both
#: hippocampus classes after a short training.
CASES = {"train": 8, "val": 2, "test": 3}
RECIPE = ["task=segmentation", "data.format=manifest", "data.preprocess.intensity=zscore",
          "data.patch.size=[32,48,32]", "data.patch.samples_per_case=2",
          "data.patch.pos_fraction=0.7", "data.augment.preset=none",
          "model.backbone.name=monai_unet", "model.backbone.channels=[8,16,32,64]",
          "model.backbone.strides=[2,2,2]", "model.backbone.num_res_units=1",
          "model.backbone.pretrained=none", "train.epochs=2", "train.batch_size=4",
          "train.optimizer.lr=0.01", "train.scheduler.warmup_epochs=0", "loss.name=dice_ce",
          "eval.bootstrap=0", "eval.sliding_window.roi_size=[32,48,32]",
          "eval.sliding_window.overlap=0.25", "data.classes=[background,Anterior,Posterior]"]


def _manifest(root: Path, repo: Path, path: Path) -> Path:
    rows = list(csv.DictReader((repo / "configs" / "hippocampus_split.csv").open()))
    lines = ["id,image,label,split"]
    for split, count in CASES.items():
        for row in [r for r in rows if r["split"] == split][:count]:
            name = f"{row['id']}.nii.gz"
            lines.append(f"{row['id']},{root / 'imagesTr' / name},{root / 'labelsTr' / name},"
                         f"{split}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_hippocampus_bundle_masks_equal_medxfer_predict_without_medxfer(
        shared_data, repo_root, tmp_path):
    root = shared_data / "msd_hippocampus"
    manifest = _manifest(root, repo_root, tmp_path / "hippocampus.csv")
    run_dir = tmp_path / "run"
    run_pipeline(load_config(None, [f"data.path={manifest}", *RECIPE]), run_dir,
                 progress=False)
    bundle = export_run(run_dir, "monai-bundle", tmp_path / "bundle").output
    assert json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))[
        "medxfer"]["network"]["target"] == "monai.networks.nets.UNet"
    test_ids = [r["id"] for r in csv.DictReader((run_dir / "splits.csv").open())
                if r["split"] == "test"]
    images = tmp_path / "images"
    images.mkdir()
    for case in test_ids:  # volumes the run never trained on
        (images / f"{case}.nii.gz").symlink_to(root / "imagesTr" / f"{case}.nii.gz")

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", str(RUNNER), "infer", str(bundle),
                           str(images), str(tmp_path / "bundle_out")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["medxfer_blocked"] and not report["medxfer_loaded"]
    assert report["missing"] == []
    assert main(["predict", "--run", str(run_dir), *map(str, sorted(images.iterdir())),
                 "--output", str(tmp_path / "predict")]) == 0

    classes = set()
    for case in test_ids:
        ours = nib.load(str(tmp_path / "predict" / f"{case}_mask.nii.gz"))
        theirs = nib.load(str(tmp_path / "bundle_out" / f"{case}_seg.nii.gz"))
        a = np.asarray(ours.dataobj)
        b = np.asarray(theirs.dataobj).reshape(a.shape)
        assert a.shape == nib.load(str(images / f"{case}.nii.gz")).shape
        assert np.allclose(theirs.affine, ours.affine, atol=1e-5)
        assert int((a != b).sum()) == 0, case
        classes |= set(np.unique(a).tolist())
    assert len(classes) > 1  # a real comparison: hippocampus is predicted, not only background
