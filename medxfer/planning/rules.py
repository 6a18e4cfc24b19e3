"""The planning rules: from a fingerprint (and this machine) to the choices of a plan.

Each rule sets config keys with a one-line reason; docs/plan.md states every rule with the
runs that chose it. The rules read the fingerprint's training and validation side only,
and are written for data in general: sizes, spacings, stored types, class balance and the
time budget decide, never a dataset's name.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from medxfer.planning.fingerprint import Fingerprint
from medxfer.planning.plan import Plan
from medxfer.plugins import Registries
from medxfer.tasks import get_task

#: Classifier backbones with ImageNet weights, fastest first on a CPU; the first whose
#: weights are on this machine is planned.
IMAGENET_CLASSIFIERS_CPU = ("mobilenet_v2", "efficientnet_b0", "mobilenet_v3_large",
                            "resnet18", "densenet121", "resnet50")
#: The same on a GPU, where a larger network costs little more time.
IMAGENET_CLASSIFIERS_CUDA = ("resnet50", "efficientnet_b0", "densenet121", "resnet18",
                             "mobilenet_v2", "mobilenet_v3_large")
#: 2D segmentation networks with an ImageNet encoder, in order of preference.
IMAGENET_SEGMENTERS = ("unet", "fpn", "deeplabv3plus", "unetplusplus")
#: An ImageNet CNN halves its input five times: below this side its last feature maps are
#: a pixel or two, so small images are upsampled when the budget allows.
MIN_IMAGENET_SIDE = 64
#: The largest side planned for 2D classification (ImageNet's training size).
MAX_2D_SIDE = 224
#: The largest 3D input (voxels per side) on a CPU / a GPU.
MAX_3D_SIDE = {"cpu": 64, "cuda": 128}
#: Voxels spacings more than this far apart make a volume anisotropic (nnU-Net's rule):
#: such volumes are segmented as 2D slices across the coarse axis.
ANISOTROPY = 3.0
#: A binary classification whose smaller class is under this share of the training cases
#: is planned as imbalanced: Youden's threshold and balanced accuracy as the headline.
IMBALANCED = 0.2
#: Optimiser steps one network should get, by label kind (more epochs for smaller
#: datasets) ...
TARGET_STEPS = {"class": 500, "value": 500, "mask": 2000}
#: ... within these epoch bounds.
EPOCH_BOUNDS = {"class": (8, 30), "value": (8, 30), "mask": (4, 100)}
#: Datasets with at most this many training cases get a deep ensemble of up to
#: ``MAX_MEMBERS`` networks when the budget holds at least one full training: the members
#: are trained in turn while the next one fits (``ensemble.time_limit``), so how many is
#: decided by the speed of the run itself, not by the probe alone.
ENSEMBLE_MAX_CASES = 2000
MAX_MEMBERS = 5


def round_to(value: float, multiple: int) -> int:
    """``value`` rounded to the nearest positive multiple of ``multiple``."""
    return max(multiple, int(round(value / multiple)) * multiple)


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


def plan_data(plan: Plan, fp: Fingerprint) -> None:
    """The task, the data's path and layout, the split and the intensity normalisation."""
    plan.set("task", fp.task, f"the labels are {_labels_said(fp)}")
    plan.set("data.path", str(Path(fp.path).resolve()), "the dataset this plan was made from")
    plan.set("data.format", fp.layout, f"read as {fp.layout} ({fp.json.get('layout_reason')})")
    if fp.json.get("split_source"):
        plan.set("data.split.use_existing", True,
                 f"the dataset's own split ({fp.json['split_source']}) is kept, as published "
                 "results use it")
    else:
        stratified = get_task(fp.task).labels_are_classes
        plan.set("data.split", {"val_fraction": 0.15, "test_fraction": 0.15, "seed": 0,
                                "stratify": stratified},
                 "no stored split: 70/15/15 per case" + (", stratified by class"
                                                         if stratified else ""))
    plan.set("data.preprocess.intensity", *intensity_rule(fp))


def _labels_said(fp: Fingerprint) -> str:
    task = get_task(fp.task)
    if task.labels_are_masks:
        return f"masks of {len(fp.class_names) - 1} foreground class(es)"
    if task.labels_are_values:
        return "one number per image"
    return f"one of {len(fp.class_names)} classes per image"


def intensity_rule(fp: Fingerprint) -> tuple[str, str]:
    """The intensity normalisation and its reason: CT windowed in Hounsfield units, MR and
    other scanner volumes standardised per volume, 8-bit images scaled by 255, other
    images clipped at percentiles."""
    modality = (fp.modality or "").upper()
    lo = fp.intensity.get("p01")
    if modality == "CT" or (lo is not None and lo < -500 and fp.spatial_dims == 3):
        return "ct_window", "CT (declared or Hounsfield-like values below -500): a fixed HU window"
    if fp.uint8:
        return "auto", "8-bit files: auto divides 2D images by 255 and standardises volumes"
    if fp.spatial_dims == 3:
        return "zscore", (f"{modality or 'scanner'} volumes of stored types "
                          f"{', '.join(sorted(fp.dtypes))}: each volume standardised alone "
                          "(intensity scales differ between volumes)")
    return "percentile", "images of more than 8 bits: clipped at the 0.5/99.5 percentiles"


# ---------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------


def offline_weights(registries: Registries, name: str, source: str = "imagenet") -> bool:
    """Whether backbone ``name``'s ``source`` weights are on this machine."""
    try:
        entry = registries.backbone.get(name)
    except Exception:  # noqa: BLE001 - not registered here
        return False
    caps = getattr(entry, "capabilities", None)
    if caps is None or source not in caps.pretrained:
        return False
    return bool(caps.offline().get(source))


def supports(registries: Registries, name: str, dims: int) -> bool:
    """Whether backbone ``name`` is registered and builds ``dims``-D networks."""
    try:
        entry = registries.backbone.get(name)
    except Exception:  # noqa: BLE001
        return False
    caps = getattr(entry, "capabilities", None)
    return caps is not None and dims in caps.spatial_dims


def choose_classifier(registries: Registries, device: str, dims: int) -> tuple[str, str, str]:
    """``(backbone, pretrained, reason)`` for classification or regression."""
    if dims == 2:
        order = IMAGENET_CLASSIFIERS_CUDA if device == "cuda" else IMAGENET_CLASSIFIERS_CPU
        for name in order:
            if supports(registries, name, 2) and offline_weights(registries, name):
                return name, "imagenet", (
                    f"the {'fastest ' if device != 'cuda' else ''}ImageNet backbone whose "
                    f"weights are on this machine (looked for {', '.join(order)})")
        return "basic_cnn", "none", ("no ImageNet backbone's weights are on this machine: "
                                     "the baseline CNN from scratch")
    return "basic_cnn", "none", ("3D: no 3D ImageNet-scale weights offline; the baseline 3D "
                                 "CNN trains from scratch (docs/plan.md, rule 3D)")


def choose_segmenter(registries: Registries, dims: int) -> tuple[dict[str, Any], str]:
    """The segmentation network spec and its reason."""
    if dims == 2:
        for name in IMAGENET_SEGMENTERS:
            if supports(registries, name, 2) and offline_weights(registries, name):
                return ({"name": name, "encoder": "mobilenet_v2", "pretrained": "imagenet"},
                        f"2D {name} with an ImageNet encoder whose weights are on this machine")
        return ({"name": "monai_unet", "pretrained": "none"},
                "no ImageNet encoder's weights are on this machine: MONAI's U-Net from scratch")
    return ({"name": "monai_unet", "channels": [16, 32, 64, 128, 256],
             "strides": [2, 2, 2, 2], "num_res_units": 2, "pretrained": "none"},
            "3D: MONAI's residual U-Net from scratch (no 3D weights offline)")


def plan_model(plan: Plan, fp: Fingerprint, registries: Registries, device: str,
               dims: int) -> None:
    """Backbone, head, strategy, optimiser, schedule and loss."""
    task = get_task(fp.task)
    if task.labels_are_masks:
        spec, reason = choose_segmenter(registries, dims)
        plan.set("model.backbone", spec, reason)
        plan.set("loss.name", "dice_ce", "Dice + cross-entropy: robust to small foregrounds")
        plan.set("loss.include_background", False, "Dice over the foreground classes only")
        plan.set("train.early_stopping.metric", "dice",
                 "the checkpoint with the best validation mean foreground Dice is kept")
    else:
        name, pretrained, reason = choose_classifier(registries, device, dims)
        plan.set("model.backbone", {"name": name, "pretrained": pretrained}, reason)
        scratch = pretrained == "none"
        plan.set("model.head.dropout", 0.3 if scratch else 0.2,
                 "dropout before the head" + (": more for a network from scratch"
                                              if scratch else ""))
        if scratch and task.labels_are_classes:
            plan.set("loss.label_smoothing", 0.1, "label smoothing regularises a network "
                                                  "trained from scratch on few cases")
    pretrained = plan.get("model.backbone.pretrained")
    plan.set("strategy", {"name": "full_finetune"},
             "full fine-tuning with a small learning rate: the best strategy in every "
             "shipped comparison (docs/results.md)" if pretrained != "none" else
             "every layer trains (no pretrained weights to keep)")
    scratch_classifier = pretrained == "none" and not task.labels_are_masks
    plan.set("train.optimizer", {"name": "adamw", "lr": 0.001,
                                 "weight_decay": 0.01 if scratch_classifier else 0.0001},
             "AdamW at 1e-3 as in every shipped config" + ("; more weight decay for a "
                                                          "classifier from scratch"
                                                          if scratch_classifier else ""))
    plan.set("train.scheduler", {"name": "cosine", "warmup_epochs": 0.5},
             "half an epoch of warm-up, then a cosine decay to the last epoch")


# ---------------------------------------------------------------------------------------
# decisions and budget
# ---------------------------------------------------------------------------------------


def plan_decision(plan: Plan, fp: Fingerprint) -> None:
    """Threshold rule and monitored metric for class labels (imbalance handled here)."""
    task = get_task(fp.task)
    if task.labels_are_values:
        plan.set("train.early_stopping.metric", "mae", "the lowest validation MAE is kept")
        return
    if not task.labels_are_classes:
        return
    plan.set("train.early_stopping.metric", "auc",
             "validation AUC picks the checkpoint: it does not depend on a threshold")
    minority = fp.minority_fraction
    if len(fp.class_names) != 2:
        plan.set("eval.threshold", "val_accuracy", "more than two classes: the most "
                 "probable class is predicted (the threshold rule applies to binary only)")
        return
    share = f"{minority:.0%}" if minority is not None else "unknown"
    if minority is not None and minority < IMBALANCED:
        plan.set("eval.threshold", "val_youden",
                 f"imbalanced: the smaller class is {share} of the training cases, so the "
                 "threshold maximises sensitivity + specificity on validation and balanced "
                 "accuracy is the headline (accuracy would reward answering the larger class)")
        plan.summary["headline"] = "balanced_accuracy"
    else:
        plan.set("eval.threshold", "val_accuracy_1se",
                 f"the smaller class is {share} of the training cases: of the thresholds "
                 "within one standard error of the best validation accuracy, the one nearest "
                 "0.5 (a few validation cases cannot move it far)")
        plan.summary["headline"] = "accuracy"


def target_epochs(kind: str, steps_per_epoch: int) -> int:
    """Epochs that give one network about ``TARGET_STEPS`` optimiser steps, within bounds,
    for labels of ``kind``."""
    lo, hi = EPOCH_BOUNDS[kind]
    return int(min(hi, max(lo, math.ceil(TARGET_STEPS[kind] / max(steps_per_epoch, 1)))))
