"""The base of transfer strategies and the layer-group access they share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medxfer.errors import ConfigError
from medxfer.hookspecs import hookimpl
from medxfer.plugin_kit.options import NamedPlugin

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from medxfer.training.context import FitContext


def backbone_groups(ctx: FitContext) -> list[nn.Module]:
    """The backbone's layer groups, input to output; an error if it declares none.

    Raises:
        ConfigError: when the backbone declares no layer groups.
    """
    groups = ctx.model.backbone.layer_groups()
    if not groups:
        raise ConfigError(
            f"model.backbone: backbone {backbone_name(ctx)!r} declares no layer groups, "
            "so layer-wise transfer strategies cannot be used with it"
        )
    return groups


def backbone_name(ctx: FitContext) -> str:
    """The configured backbone's name, for messages."""
    try:
        return str(ctx.config.model.backbone.name)
    except AttributeError:
        return type(ctx.model.backbone).__name__


class Strategy(NamedPlugin):
    """Base of transfer strategies.

    Subclasses set :attr:`name`, pass their options to ``__init__`` (kept for
    :meth:`describe`) and implement the lifecycle hooks they need with
    ``@medxfer.hookimpl``. This base implements ``medxfer_epoch_start`` to keep the
    normalisation layers of frozen groups in evaluation mode after the trainer's
    ``model.train()``; a subclass that overrides it calls :meth:`lock_frozen_norms`.

    Attributes:
        name: The registered name.
        uses_pretrained: ``False`` asks the core to build the backbone without pretrained
            weights (``scratch``).
        freezes_backbone: ``True`` when the whole backbone stays frozen for the whole run
            (``feature_extraction``); ``medxfer pretrain`` refuses such a strategy.
        keeps_pretrained: ``True`` when some starting weights stay frozen, or a loss pulls
            towards them; ``medxfer run`` warns when they are random (``pretrained: none``).
        changes_trainable_parameters: ``True`` when parameters start or stop training
            during the run (``gradual_unfreeze``); ``train.ddp.static_graph`` is refused.
    """

    uses_pretrained: bool = True
    freezes_backbone: bool = False
    keeps_pretrained: bool = False
    changes_trainable_parameters: bool = False

    @staticmethod
    def lock_frozen_norms(ctx: FitContext) -> None:
        """Put the normalisation layers of frozen groups back into evaluation mode."""
        from medxfer.training.freezing import keep_frozen_norms_in_eval

        keep_frozen_norms_in_eval(ctx.model)

    @hookimpl
    def medxfer_epoch_start(self, ctx: FitContext) -> None:
        """Undo ``model.train()`` for the normalisation layers of frozen groups."""
        self.lock_frozen_norms(ctx)
