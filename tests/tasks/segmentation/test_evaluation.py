"""evaluate_segmentation_and_report: per-case CSV, metrics.json, figures and report.

A fixed 1x1 convolution stands in for a trained network: class 1 where the image is bright,
class 2 where it is dark, background elsewhere, so every case's metrics are known in advance.
"""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from medxfer.config import load_config
from medxfer.training.amp import Precision
from medxfer.tasks.segmentation.evaluation import evaluate_segmentation_and_report
from medxfer.training.trainer import FitResult

CLASSES = ["background", "lesion", "cyst"]


class ThresholdNet(nn.Module):
    """Logits ``[0, 4(x - 0.5), 4(-x - 0.5)]``: lesion above 0.5, cyst below -0.5."""

    size_divisor = 1

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(1, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.0, 4.0, -4.0]).view(3, 1, *[1] * spatial_dims))
            self.conv.bias.copy_(torch.tensor([0.0, -2.0, -2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def make_case(case_id: str, spatial: tuple[int, ...], lesion=None, cyst=None,
              predicted_lesion=None) -> dict:
    """Truth from ``lesion``/``cyst`` boxes; the image makes the net predict
    ``predicted_lesion`` (default: the true lesion) and the true cyst."""
    label = torch.zeros(1, *spatial, dtype=torch.int64)
    image = torch.zeros(1, *spatial)
    if lesion is not None:
        label[(0, *lesion)] = 1
    if cyst is not None:
        label[(0, *cyst)] = 2
        image[(0, *cyst)] = -1.0
    bright = lesion if predicted_lesion is None else predicted_lesion
    if bright is not None:
        image[(0, *bright)] = 1.0
    return {"image": image, "label": label, "id": case_id}


def make_bundle(spatial_dims: int) -> SimpleNamespace:
    spatial = (8, 8) if spatial_dims == 2 else (8, 8, 6)
    box = tuple(slice(1, 4) for _ in spatial)
    shifted = (slice(1, 4), slice(2, 5)) + box[2:]
    other = tuple(slice(5, 7) for _ in spatial)
    test = [
        make_case("perfect", spatial, lesion=box, cyst=other),
        make_case("shifted", spatial, lesion=box, predicted_lesion=shifted),
        make_case("missed", spatial, lesion=box, predicted_lesion=()),
        make_case("empty", spatial),
    ]
    test[2]["image"].zero_()  # nothing bright: the lesion is missed
    val = [make_case("val-1", spatial, lesion=box), make_case("val-2", spatial, cyst=other)]
    return SimpleNamespace(task="segmentation", spatial_dims=spatial_dims, in_channels=1,
                           num_classes=3, class_names=list(CLASSES), train=[None] * 5,
                           val=val, test=test)


def fit_result() -> FitResult:
    history = [{"epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "val_dice": 0.4, "lr": 1e-3},
               {"epoch": 2, "train_loss": 0.6, "val_loss": 0.5, "val_dice": 0.7, "lr": 1e-3}]
    return FitResult(history=history, best_epoch=2, best_score=0.7, monitor="val_dice",
                     train_seconds=3.2)


def run(tmp_path, spatial_dims, overrides=()):
    config = load_config(None, ["task=segmentation", "eval.bootstrap=50", *overrides])
    run_info = {"backbone": "threshold_net", "strategy": {"name": "full_finetune"},
                "pretrained": "none"}
    return evaluate_segmentation_and_report(
        config, tmp_path, ThresholdNet(spatial_dims), make_bundle(spatial_dims), fit_result(),
        run_info, device=torch.device("cpu"), precision=Precision(None, "cpu"))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_outputs_of_a_segmentation_run(tmp_path, spatial_dims):
    summary = run(tmp_path, spatial_dims)

    with open(tmp_path / "per_case.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["id"], r["split"]) for r in rows] == [
        ("val-1", "val"), ("val-2", "val"), ("perfect", "test"), ("shifted", "test"),
        ("missed", "test"), ("empty", "test")]
    by_id = {r["id"]: r for r in rows}
    assert list(rows[0])[:3] == ["id", "split", "dice_mean"]
    for column in ("dice_lesion", "iou_cyst", "hd95_lesion", "true_fraction_cyst",
                   "pred_fraction_lesion"):
        assert column in rows[0]
    assert float(by_id["perfect"]["dice_mean"]) == 1.0
    assert float(by_id["missed"]["dice_lesion"]) == 0.0
    assert float(by_id["empty"]["dice_mean"]) == 1.0  # nothing there, nothing predicted
    assert 0.0 < float(by_id["shifted"]["dice_lesion"]) < 1.0

    saved = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(summary))
    for key in ("task", "val", "test", "ci95", "train_seconds", "best_epoch", "monitor",
                "history", "splits", "figures", "backbone", "strategy", "pretrained"):
        assert key in saved, key
    test = saved["test"]
    assert test["n"] == 4 and saved["val"]["n"] == 2
    assert set(test) >= {"dice", "dice_lesion", "dice_cyst", "iou", "iou_lesion", "hd95",
                         "hd95_cyst", "fraction_mae", "fraction_mse"}
    assert test["dice_cyst"] == 1.0
    assert saved["ci95"]["dice"][0] <= test["dice"] <= saved["ci95"]["dice"][1]
    assert saved["splits"] == {"train": 5, "val": 2, "test": 4}
    assert saved["representative_cases"]["worst"] == "missed"
    assert saved["representative_cases"]["best"] == "perfect"
    assert saved["spacing"] == [1.0] * spatial_dims and saved["spacing_assumed"] is True

    assert saved["figures"] == ["figures/dice_per_class.png",
                                "figures/segmentation_overlays.png",
                                "figures/training_curves.png"]
    for figure in saved["figures"]:
        assert (tmp_path / figure).read_bytes().startswith(b"\x89PNG")

    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Metrics per class" in md
    assert "| Class | Dice val | Dice test, 95% CI |" in md
    assert "| lesion |" in md and "| cyst |" in md and "| Mean (foreground) |" in md
    assert "HD95 (voxels)" in md and "Foreground fraction MAE" in md
    assert "![Dice per class" in md and "(figures/segmentation_overlays.png)" in md
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Metrics per class" in html and "segmentation_overlays.png" in html
    assert not list(tmp_path.glob(".*.tmp"))


def test_spacing_from_the_config_gives_hd95_in_mm(tmp_path):
    plain = run(tmp_path / "plain", 3)
    scaled = run(tmp_path / "scaled", 3, ["data.preprocess.spacing=[2.0,2.0,2.0]"])
    assert scaled["spacing"] == [2.0, 2.0, 2.0] and scaled["spacing_assumed"] is False
    assert scaled["test"]["hd95_lesion"] == pytest.approx(2 * plain["test"]["hd95_lesion"])
    assert scaled["test"]["dice"] == plain["test"]["dice"]
    md = (tmp_path / "scaled" / "report.md").read_text(encoding="utf-8")
    assert "HD95 (mm)" in md and "2 × 2 × 2 mm" in md


def test_spacing_of_the_wrong_length_names_the_key(tmp_path):
    from medxfer.errors import ConfigError

    with pytest.raises(ConfigError, match="data.preprocess.spacing"):
        run(tmp_path, 3, ["data.preprocess.spacing=[2.0,2.0]"])
