"""Full fine-tuning: every parameter trains, the backbone optionally at a smaller rate."""

from __future__ import annotations

from typing import Any

import medxfer
from medxfer.api import FitContext, Strategy
from medxfer_plugins.strategies._common import check_float


class FullFinetune(Strategy):
    """Train everything; the backbone's learning rate is ``backbone_lr_mult * base_lr``.

    Args:
        backbone_lr_mult: Multiplier of the base learning rate for the pretrained backbone
            (e.g. 0.1 for "small learning rates" on the pretrained part); the head trains at
            the base learning rate.
    """

    name = "full_finetune"

    def __init__(self, backbone_lr_mult: float) -> None:
        super().__init__(backbone_lr_mult=backbone_lr_mult)
        self.backbone_lr_mult = backbone_lr_mult

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx: FitContext) -> None:
        """Make every parameter of the network trainable."""
        medxfer.unfreeze(ctx.model)

    @medxfer.hookimpl
    def medxfer_parameter_groups(self, ctx: FitContext,
                                 base_lr: float) -> list[dict[str, Any]] | None:
        """Backbone and head groups when the backbone has its own rate; else the default."""
        if self.backbone_lr_mult == 1.0:
            return None
        groups = [g for g in (
            medxfer.parameter_group(ctx.model.backbone, lr=base_lr * self.backbone_lr_mult,
                                    name="backbone"),
            medxfer.parameter_group(ctx.model.head, lr=base_lr, name="head"),
        ) if g is not None]
        rest = medxfer.ungrouped_trainable_parameters(ctx.model, groups)
        if rest:
            groups.append({"params": rest, "lr": float(base_lr), "name": "other"})
        return groups


def full_finetune(backbone_lr_mult: float = 1.0) -> FullFinetune:
    """Fine-tune every layer; ``backbone_lr_mult`` scales the backbone's learning rate.

    Raises:
        ConfigError: when ``strategy.backbone_lr_mult`` is not a positive number.
    """
    return FullFinetune(check_float("backbone_lr_mult", backbone_lr_mult, minimum=0.0,
                                    exclusive=True))


@medxfer.hookimpl
def medxfer_register_strategies(register):
    """Register ``full_finetune``."""
    register("full_finetune", full_finetune,
             description="fine-tune every layer (option: backbone_lr_mult for the backbone's rate)")
