"""Discriminative learning rates: every layer trains, earlier layers more slowly.

The head trains at the base rate; backbone layer group ``i`` of ``G`` at
``base_lr * decay ** (G - i)`` (the last backbone group at ``base_lr * decay``, the first
at ``base_lr * decay ** G``), or at ``base_lr * multipliers[i]`` with an explicit list.
"""

from __future__ import annotations

from typing import Any

import medxfer
from medxfer.api import ConfigError, FitContext, Strategy, backbone_groups, backbone_name
from medxfer_plugins.strategies._common import check_float, option_error

DEFAULT_DECAY = 0.5


class DiscriminativeLR(Strategy):
    """Per-layer-group learning-rate multipliers, geometric towards the input.

    Args:
        decay: Ratio between the rates of neighbouring groups (used without
            ``multipliers``).
        multipliers: One multiplier of the base rate per backbone layer group, input to
            output; the head always trains at the base rate.
    """

    name = "discriminative_lr"

    def __init__(self, decay: float | None, multipliers: list[float] | None) -> None:
        super().__init__(decay=decay, multipliers=multipliers)
        self.decay = DEFAULT_DECAY if decay is None else decay
        self.multipliers = multipliers

    def group_multipliers(self, num_groups: int, backbone: str = "") -> list[float]:
        """The learning-rate multiplier of each backbone group, input to output.

        Raises:
            ConfigError: when ``multipliers`` does not have one entry per group.
        """
        if self.multipliers is None:
            return [self.decay ** (num_groups - i) for i in range(num_groups)]
        if len(self.multipliers) != num_groups:
            raise ConfigError(
                f"strategy.multipliers: has {len(self.multipliers)} entries but backbone "
                f"{backbone!r} has {num_groups} layer groups; give one multiplier per group "
                "(input to output)"
            )
        return list(self.multipliers)

    def describe(self) -> dict[str, Any]:
        """Name and options, with the default decay spelt out."""
        return {"name": self.name, "decay": None if self.multipliers else self.decay,
                "multipliers": self.multipliers}

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx: FitContext) -> None:
        """Make everything trainable and check ``multipliers`` against the backbone."""
        medxfer.unfreeze(ctx.model)
        self.group_multipliers(len(backbone_groups(ctx)), backbone_name(ctx))

    @medxfer.hookimpl
    def medxfer_parameter_groups(self, ctx: FitContext,
                                 base_lr: float) -> list[dict[str, Any]] | None:
        """One group per backbone layer group at its own rate, then the head."""
        groups = backbone_groups(ctx)
        mults = self.group_multipliers(len(groups), backbone_name(ctx))
        param_groups: list[dict[str, Any]] = []
        for index, (group, mult) in enumerate(zip(groups, mults)):
            built = medxfer.parameter_group(
                group, lr=base_lr * mult, name=medxfer.layer_group_name(index),
                exclude=[p for g in param_groups for p in g["params"]])
            if built is not None:
                param_groups.append(built)
        head = medxfer.parameter_group(ctx.model.head, lr=base_lr, name="head")
        if head is not None:
            param_groups.append(head)
        rest = medxfer.ungrouped_trainable_parameters(ctx.model, param_groups)
        if rest:
            param_groups.append({"params": rest, "lr": float(base_lr), "name": "other"})
        return param_groups


def discriminative_lr(decay: float | None = None,
                      multipliers: list[float] | None = None) -> DiscriminativeLR:
    """Per-group learning rates: ``decay`` (default 0.5) per group towards the input, or
    an explicit ``multipliers`` list (one per backbone group, input to output).

    Raises:
        ConfigError: naming ``strategy.decay`` or ``strategy.multipliers`` when a value is
            out of range, or when both are given.
    """
    if decay is not None and multipliers is not None:
        raise option_error("multipliers", "give either strategy.decay or strategy.multipliers, "
                           "not both")
    if decay is not None:
        decay = check_float("decay", decay, minimum=0.0, maximum=1.0, exclusive=True)
    if multipliers is not None:
        if isinstance(multipliers, (str, bytes)) or not isinstance(multipliers, (list, tuple)):
            raise option_error("multipliers", f"expected a list of numbers, got {multipliers!r}")
        if not multipliers:
            raise option_error("multipliers", "is empty; give one multiplier per layer group")
        multipliers = [check_float(f"multipliers[{i}]", m, minimum=0.0, exclusive=True)
                       for i, m in enumerate(multipliers)]
    return DiscriminativeLR(decay, multipliers)


@medxfer.hookimpl
def medxfer_register_strategies(register):
    """Register ``discriminative_lr``."""
    register("discriminative_lr", discriminative_lr,
             description="per-layer-group learning rates, decay (0.5) per group towards the input")
