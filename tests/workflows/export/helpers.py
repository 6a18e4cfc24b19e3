"""Finished-looking runs with real (untrained, seeded) networks, made without training,
and small test images."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

import medxfer
from medxfer.config import load_config, write_resolved_config
from medxfer.training.checkpoints import save_model
from medxfer.workflows.predict import load_run
from medxfer.tasks import task_of

SEG_3D = ["task=segmentation", "model.backbone.name=monai_unet",
          "model.backbone.channels=[4,8,16]", "model.backbone.strides=[2,2]",
          "model.backbone.num_res_units=1", "model.backbone.pretrained=none",
          "data.preprocess.intensity=zscore"]
CLS_2D = ["task=classification", "model.backbone.name=basic_cnn",
          "model.backbone.pretrained=none", "data.preprocess.image_size=[32,32]",
          "data.preprocess.intensity=minmax"]
#: a regression run: one output per image, what a manifest with a numeric label makes
REG_2D = ["task=regression", "model.backbone.name=basic_cnn",
          "model.backbone.pretrained=none", "data.preprocess.image_size=[32,32]",
          "data.preprocess.intensity=minmax"]


class _Bundle:
    """What a task's build_network reads from a data bundle."""

    def __init__(self, in_channels: int, spatial_dims: int, num_classes: int) -> None:
        self.in_channels, self.spatial_dims, self.num_classes = (in_channels, spatial_dims,
                                                                 num_classes)


def make_run(run_dir: Path, overrides: list[str], *, spatial_dims: int, num_classes: int,
             in_channels: int = 1, seed: int = 0, class_names: list[str] | None = None):
    """Write config, weights and sidecar as `medxfer run` does; return the loaded run.

    ``class_names`` defaults to ``background, class1, ...``; a regression run records its
    label column instead (``["label"]``), as `medxfer run` does.
    """
    torch.manual_seed(seed)
    config = load_config(None, overrides)
    registries = medxfer.build_registries()
    write_resolved_config(config, run_dir)
    model, _ = task_of(config).build_network(config, registries,
                                  _Bundle(in_channels, spatial_dims, num_classes),
                                  dict(config.model.backbone.kwargs))
    names = class_names or ["background", *[f"class{i}" for i in range(1, num_classes)]]
    save_model(run_dir, model, {"task": config.task, "num_classes": num_classes,
                                "class_names": names, "in_channels": in_channels,
                                "spatial_dims": spatial_dims, "imagenet_norm": False,
                                "backbone": config.model.backbone.model_dump()})
    return load_run(run_dir, registries=registries)


def write_volume(path: Path, shape=(27, 35, 19), seed: int = 0) -> Path:
    """A NIfTI volume with an oblique affine and smooth structure (odd sizes: padding)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    image = 200 * np.exp(-((grid ** 2).sum(0)) * 3) + rng.normal(0, 10, shape)
    affine = np.diag([-1.2, 0.9, 2.0, 1.0])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(path))
    return path


def write_labelled_cases(folder: Path, shapes=((27, 35, 19), (30, 24, 26))) -> Path:
    """NIfTI volumes with masks (0, 1, 2 by intensity) listed in ``folder/dataset.json``
    (MONAI's Decathlon datalist, what a bundle's ``train.json`` reads); returns ``folder``."""
    items = []
    for i, shape in enumerate(shapes):
        image = write_volume(folder / "imagesTr" / f"case{i}.nii.gz", shape, seed=i)
        loaded = nib.load(str(image))
        values = np.asarray(loaded.dataobj)
        mask = (values > 100).astype(np.uint8) + (values > 150).astype(np.uint8)
        (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(mask, loaded.affine), str(folder / "labelsTr" / image.name))
        items.append({"image": f"./imagesTr/{image.name}", "label": f"./labelsTr/{image.name}"})
    (folder / "dataset.json").write_text(json.dumps({"training": items}), encoding="utf-8")
    return folder
