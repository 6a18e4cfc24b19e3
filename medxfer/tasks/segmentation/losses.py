"""The segmentation losses: MONAI's Dice-type losses, or voxel-wise cross-entropy."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss, TverskyLoss

from medxfer.config import RunConfig


def segmentation_loss(config: RunConfig) -> torch.nn.Module:
    """MONAI's Dice, DiceCE, DiceFocal or Tversky loss (``loss.name``; ``auto``: DiceCE),
    or plain cross-entropy (``ce``), on logits ``[N, C, *spatial]`` and integer masks
    ``[N, 1, *spatial]``. ``loss.include_background`` decides whether class 0 counts in
    the Dice-type terms (cross-entropy always sees every class)."""
    cfg = config.loss
    name = "dice_ce" if cfg.name == "auto" else cfg.name
    common = {"include_background": cfg.include_background, "to_onehot_y": True,
              "softmax": True}
    if name == "ce":
        return SegmentationCE(cfg.label_smoothing)
    if name == "dice":
        return DiceLoss(**common)
    if name == "dice_ce":
        return DiceCELoss(**common, label_smoothing=cfg.label_smoothing)
    if name == "dice_focal":
        return DiceFocalLoss(**common, gamma=cfg.focal_gamma)
    return TverskyLoss(**common, alpha=cfg.tversky_alpha, beta=cfg.tversky_beta)


class SegmentationCE(torch.nn.Module):
    """Voxel-wise cross-entropy on logits ``[N, C, *spatial]`` and masks ``[N, 1, *spatial]``."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs.float(), targets[:, 0].long(),
                                                 label_smoothing=self.label_smoothing)
