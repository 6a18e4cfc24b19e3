"""The base of domain-adaptation methods, and one for methods that align features."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medxfer.hookspecs import hookimpl
from medxfer.plugin_kit.options import NamedPlugin

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from medxfer.training.context import FitContext, LossTerm


class DomainAdaptation(NamedPlugin):
    """Base of domain-adaptation methods.

    Subclasses set :attr:`name`, pass their options to ``__init__`` (kept for
    :meth:`describe`) and implement the lifecycle hooks they need with
    ``@medxfer.hookimpl``. Optional attributes (see ``docs/plugin_hooks.md``):
    ``draws_target_batches`` and ``restore_structure(model)``.

    Attributes:
        name: The registered name.
        draws_target_batches: ``False`` when the method needs no target batch during
            training (the target loader is still in ``ctx.target_loader``).
    """

    draws_target_batches: bool = True


def paired_features(features: torch.Tensor, target_features: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Source and target features as float32 ``[N, F]``, or ``None`` without a target batch."""
    if target_features is None:
        return None
    return features.float().flatten(1), target_features.float().flatten(1)


class FeatureDistance(DomainAdaptation):
    """A method that adds ``weight * distance(source features, target features)`` to the
    loss at every step with a target batch (CORAL, MMD). Subclasses set :attr:`name` and
    :attr:`weight` and implement :meth:`distance`."""

    weight: float

    def distance(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The discrepancy between source and target features ``[N, F]``."""
        raise NotImplementedError

    @hookimpl
    def medxfer_extra_loss_terms(self, ctx: FitContext, features: torch.Tensor,
                                 target_features: torch.Tensor | None) -> list[LossTerm] | None:
        """The method's term, named after it (``None`` for a step without a target batch)."""
        from medxfer.training.context import LossTerm

        pair = paired_features(features, target_features)
        if pair is None:
            return None
        return [LossTerm(self.name, self.distance(*pair), weight=self.weight)]
