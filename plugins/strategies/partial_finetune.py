"""Partial fine-tuning: the first ``freeze_groups`` backbone layer groups stay frozen.

Early layers hold generic features (edges, textures) that transfer across domains; the
later ones and the new head are fine-tuned.
"""

from __future__ import annotations

import medxfer
from medxfer.api import ConfigError, FitContext, Strategy, backbone_groups, backbone_name
from medxfer_plugins.strategies._common import check_bool, check_int


class PartialFinetune(Strategy):
    """Freeze backbone layer groups ``0 .. freeze_groups - 1``; train the rest.

    Args:
        freeze_groups: How many layer groups, counted from the input, stay frozen.
        train_bn: Let the batch-norm layers of frozen groups keep updating their running
            statistics (their affine parameters stay frozen).
    """

    name = "partial_finetune"

    def __init__(self, freeze_groups: int, train_bn: bool) -> None:
        super().__init__(freeze_groups=freeze_groups, train_bn=train_bn)
        self.freeze_groups = freeze_groups
        self.train_bn = train_bn
        self.keeps_pretrained = freeze_groups > 0  # ``freeze_groups: 0`` trains every group

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx: FitContext) -> None:
        """Freeze the first ``freeze_groups`` layer groups.

        Raises:
            ConfigError: when ``freeze_groups`` exceeds the backbone's number of groups.
        """
        groups = backbone_groups(ctx)
        if self.freeze_groups > len(groups):
            raise ConfigError(
                f"strategy.freeze_groups: {self.freeze_groups} is more than the "
                f"{len(groups)} layer groups of backbone {backbone_name(ctx)!r}; "
                f"use 0 to {len(groups)}"
            )
        for group in groups[: self.freeze_groups]:
            medxfer.freeze(group, train_bn=self.train_bn)


def partial_finetune(freeze_groups: int = 2, train_bn: bool = False) -> PartialFinetune:
    """Freeze the first ``freeze_groups`` backbone layer groups; fine-tune the rest.

    Raises:
        ConfigError: when ``strategy.freeze_groups`` is not a non-negative integer or
            ``strategy.train_bn`` is not a bool.
    """
    return PartialFinetune(check_int("freeze_groups", freeze_groups, minimum=0),
                           check_bool("train_bn", train_bn))


@medxfer.hookimpl
def medxfer_register_strategies(register):
    """Register ``partial_finetune``."""
    register("partial_finetune", partial_finetune,
             description="freeze the first freeze_groups backbone layer groups (default 2)")
