"""Gradual unfreezing (ULMFiT-style): train the head first, then unfreeze one backbone
layer group at a time, from the output side towards the input.

The state during epoch ``e`` is a pure function of ``e``: ``min(G, e // every)`` of the
``G`` backbone groups train, the deepest ones. ``medxfer_epoch_start(e)`` unfreezes the
groups due by ``e`` and adds each to the live optimizer in place
(``FitContext.add_param_group``), one parameter group per layer group, so the optimizer's
groups are always ``head, [other], backbone.G-1, backbone.G-2, ...``.

Resume: a checkpoint written after epoch ``e - 1`` holds the optimizer of epoch ``e - 1``;
the trainer calls ``medxfer_fit_start``, sets ``ctx.epoch = e`` (the epoch about to run),
calls ``medxfer_parameter_groups`` and then restores the optimizer's state. So
``medxfer_parameter_groups`` returns the groups that exist when epoch ``ctx.epoch`` is
about to start, *before* its ``medxfer_epoch_start``: those of epoch ``ctx.epoch - 1``
(just the head on a fresh run). The saved state dict then fits, and
``medxfer_epoch_start(e)`` adds the group due at ``e`` as in the uninterrupted run.
"""

from __future__ import annotations

from typing import Any

import medxfer
from medxfer.api import FitContext, Strategy, backbone_groups
from medxfer_plugins.strategies._common import check_bool, check_float, check_int

_BASE_LR_KEY = "gradual_unfreeze.base_lr"


class GradualUnfreeze(Strategy):
    """Unfreeze one more backbone layer group every ``every`` epochs, deepest first.

    Args:
        every: Epochs between two unfreezing steps; epoch 0 trains the head only.
        decay: Learning-rate multiplier per group towards the input: backbone group ``i``
            of ``G`` trains at ``base_lr * decay ** (G - i)`` (1.0: all at the base rate).
        train_bn: Let the batch-norm layers of still-frozen groups update their running
            statistics (their affine parameters stay frozen).
    """

    name = "gradual_unfreeze"
    keeps_pretrained = True
    changes_trainable_parameters = True  # so DDP's static graph is refused

    def __init__(self, every: int, decay: float, train_bn: bool) -> None:
        super().__init__(every=every, decay=decay, train_bn=train_bn)
        self.every = every
        self.decay = decay
        self.train_bn = train_bn

    def unfrozen_count(self, epoch: int, num_groups: int) -> int:
        """How many backbone groups (the deepest ones) train during ``epoch``."""
        return min(num_groups, max(epoch, 0) // self.every)

    def unfrozen_indices(self, epoch: int, num_groups: int) -> list[int]:
        """Indices of the groups that train during ``epoch``, in the order they unfroze."""
        count = self.unfrozen_count(epoch, num_groups)
        return list(range(num_groups - 1, num_groups - 1 - count, -1))

    def group_lr(self, index: int, num_groups: int, base_lr: float) -> float:
        """The learning rate of backbone group ``index``."""
        return float(base_lr) * self.decay ** (num_groups - index)

    def apply(self, ctx: FitContext, epoch: int) -> list[int]:
        """Freeze and unfreeze backbone groups to match ``epoch``; return the unfrozen ones."""
        groups = backbone_groups(ctx)
        unfrozen = self.unfrozen_indices(epoch, len(groups))
        for index, group in enumerate(groups):
            if index in unfrozen:
                medxfer.unfreeze(group)
            else:
                medxfer.freeze(group, train_bn=self.train_bn)
        return unfrozen

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx: FitContext) -> None:
        """Freeze the whole backbone (``medxfer_parameter_groups`` unfreezes on resume)."""
        medxfer.freeze(ctx.model.backbone, train_bn=self.train_bn)

    @medxfer.hookimpl
    def medxfer_parameter_groups(self, ctx: FitContext,
                                 base_lr: float) -> list[dict[str, Any]] | None:
        """The groups that exist before ``medxfer_epoch_start(ctx.epoch)``, i.e. at the end
        of epoch ``ctx.epoch - 1``: head, other, then each unfrozen layer group."""
        ctx.state[_BASE_LR_KEY] = float(base_lr)
        groups = backbone_groups(ctx)
        unfrozen = self.apply(ctx, ctx.epoch - 1)
        head = medxfer.parameter_group(ctx.model.head, lr=base_lr, name="head")
        param_groups = [head] if head is not None else []
        for index in unfrozen:
            group = medxfer.parameter_group(groups[index], name=medxfer.layer_group_name(index),
                                            lr=self.group_lr(index, len(groups), base_lr))
            if group is not None:
                param_groups.append(group)
        rest = medxfer.ungrouped_trainable_parameters(ctx.model, param_groups)
        if rest:
            param_groups.insert(1 if head is not None else 0,
                                {"params": rest, "lr": float(base_lr), "name": "other"})
        return param_groups

    @medxfer.hookimpl
    def medxfer_epoch_start(self, ctx: FitContext, epoch: int) -> None:
        """Unfreeze the groups due by ``epoch`` and add them to the live optimizer."""
        groups = backbone_groups(ctx)
        base_lr = ctx.state.get(_BASE_LR_KEY, ctx.base_lr)
        for index in self.unfrozen_indices(epoch, len(groups)):
            medxfer.unfreeze(groups[index])
            # Skips parameters already in the optimizer (earlier epochs, or a resume).
            ctx.add_param_group(medxfer.trainable_parameters(groups[index]),
                                lr=self.group_lr(index, len(groups), base_lr),
                                name=medxfer.layer_group_name(index))
        self.lock_frozen_norms(ctx)

    @medxfer.hookimpl
    def medxfer_epoch_end(self, ctx: FitContext, epoch: int, metrics: dict[str, float]) -> None:
        """Log how many backbone groups trained this epoch."""
        metrics["unfrozen_groups"] = float(
            self.unfrozen_count(epoch, len(ctx.model.backbone.layer_groups())))


def gradual_unfreeze(every: int = 1, decay: float = 1.0,
                     train_bn: bool = False) -> GradualUnfreeze:
    """Head first, then one more backbone group every ``every`` epochs, deepest first.

    Raises:
        ConfigError: when ``strategy.every`` is not a positive integer, ``strategy.decay``
            not in (0, 1], or ``strategy.train_bn`` not a bool.
    """
    return GradualUnfreeze(check_int("every", every, minimum=1),
                           check_float("decay", decay, minimum=0.0, maximum=1.0,
                                       exclusive=True),
                           check_bool("train_bn", train_bn))


@medxfer.hookimpl
def medxfer_register_strategies(register):
    """Register ``gradual_unfreeze``."""
    register("gradual_unfreeze", gradual_unfreeze,
             description="train the head, then unfreeze one backbone group every `every` epochs")
