"""Fine-tuning a run on labelled images, as MONAI Label's train button does (no server)."""

from __future__ import annotations

import csv
import json

import pytest

from medxfer.workflows.predict import load_run
from medxfer.errors import ConfigError, DataError
from medxfer.label.finetune import MANIFEST, finetune_config, finetune_run, split_cases
from tests.workflows.export.helpers import make_run

SAMPLE_SEG = ["task=segmentation", "model.backbone.name=monai_unet",
              "model.backbone.channels=[4,8,16]", "model.backbone.strides=[2,2]",
              "model.backbone.num_res_units=1", "model.backbone.pretrained=none",
              "strategy.name=scratch", "data.augment.preset=none", "eval.bootstrap=0",
              "train.batch_size=4"]


def _sample_cases(repo_root, count):
    root = repo_root / "sample_data" / "segmentation_3d"
    return [{"id": f"sample_{i:03d}", "image": str(root / "imagesTr" / f"sample_{i:03d}.nii.gz"),
             "label": str(root / "labelsTr" / f"sample_{i:03d}.nii.gz")} for i in range(count)]


def test_split_has_every_split_and_needs_three_cases():
    cases = [{"id": f"c{i}", "image": "i", "label": "l"} for i in range(10)]
    split = split_cases(cases, val_split=0.2, test_split=0.1)
    counts = {s: sum(c["split"] == s for c in split) for s in ("train", "val", "test")}
    assert counts == {"train": 7, "val": 2, "test": 1}
    assert split == split_cases(list(reversed(cases)), val_split=0.2, test_split=0.1)
    small = split_cases(cases[:3], val_split=0.5, test_split=0.5)
    assert sorted(c["split"] for c in small) == ["test", "train", "val"]
    with pytest.raises(DataError, match="at least 3 labelled images"):
        split_cases(cases[:2], val_split=0.2, test_split=0.1)


@pytest.mark.slow
def test_finetune_starts_from_the_run_with_its_strategy(repo_root, tmp_path):
    source = make_run(tmp_path / "source", SAMPLE_SEG, spatial_dims=3, num_classes=2).run_dir
    summary = finetune_run(source, _sample_cases(repo_root, 5), tmp_path / "ft", epochs=1)
    run = tmp_path / "ft"
    assert summary["cases"] == {"train": 3, "val": 1, "test": 1}
    assert (run / "metrics.json").is_file() and (run / "model.safetensors").is_file()
    rows = list(csv.DictReader((run / MANIFEST).open()))
    assert len(rows) == 5 and {r["split"] for r in rows} == {"train", "val", "test"}
    loaded = load_run(run)
    assert loaded.config.model.backbone.kwargs["pretrained"] == str(source.resolve())
    assert loaded.config.strategy.name == "full_finetune"  # scratch would discard the run
    assert loaded.config.train.epochs == 1
    assert json.loads((run / "model.json").read_text(encoding="utf-8"))["num_classes"] == 2
    with pytest.raises(ConfigError, match="never overwrites"):
        finetune_run(source, _sample_cases(repo_root, 5), run, epochs=1)


def test_finetuning_has_its_own_schedule(repo_root, tmp_path):
    source = make_run(tmp_path / "source", [*SAMPLE_SEG, "train.optimizer.lr=0.02",
                                            "train.scheduler.name=constant"],
                      spatial_dims=3, num_classes=2).run_dir
    manifest = tmp_path / MANIFEST
    config = finetune_config(source, manifest, epochs=6)
    assert config.train.optimizer.lr == pytest.approx(0.002)  # a tenth of the source's
    assert config.train.scheduler.name == "cosine"
    assert config.train.scheduler.warmup_epochs == 1.0
    assert config.train.epochs == 6
    short = finetune_config(source, manifest, epochs=1, lr=0.005, warmup_epochs=3)
    assert short.train.optimizer.lr == 0.005 and short.train.scheduler.warmup_epochs == 0.5
    with pytest.raises(ConfigError, match="must be positive"):
        finetune_config(source, manifest, epochs=1, lr=0.0)


def test_a_label_that_does_not_fit_stops_the_finetuning_before_it_starts(repo_root, tmp_path):
    import nibabel as nib
    import numpy as np

    source = make_run(tmp_path / "source", SAMPLE_SEG, spatial_dims=3, num_classes=2).run_dir
    cases = _sample_cases(repo_root, 4)
    like = nib.load(cases[2]["label"])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), like.affine),
             str(tmp_path / "small.nii.gz"))
    cases[2]["label"] = str(tmp_path / "small.nii.gz")
    with pytest.raises(DataError, match="label of image 'sample_002'.*fix or delete"):
        finetune_run(source, cases, tmp_path / "ft", epochs=1)
    assert not (tmp_path / "ft").exists()
