"""What the built-in domain-adaptation plugins share: option checks, ``describe()``,
pairing source and target features.

Not an entry point: each method's module imports from here. Option checks raise
:class:`medxfer.errors.ConfigError` naming the config key ``domain_adaptation.<option>``.
"""

from __future__ import annotations

import torch

import medxfer
from medxfer.training.context import FitContext, LossTerm
from medxfer_plugins._named import NamedPlugin
from medxfer_plugins._options import OptionChecks


_CHECKS = OptionChecks("domain_adaptation")
#: ``ConfigError`` naming ``domain_adaptation.<option>``; the checks below raise it.
option_error = _CHECKS.error
check_float = _CHECKS.number
check_int = _CHECKS.integer


class DomainAdaptation(NamedPlugin):
    """Base of the built-in domain-adaptation methods.

    Subclasses set :attr:`name`, pass their options to ``__init__`` (kept for
    :meth:`describe`) and implement the lifecycle hooks they need with
    ``@medxfer.hookimpl``.

    Attributes:
        name: The registered name.
    """


def paired_features(features: torch.Tensor,
                    target_features: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
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

    @medxfer.hookimpl
    def medxfer_extra_loss_terms(self, ctx: FitContext, features: torch.Tensor,
                                 target_features: torch.Tensor | None) -> list[LossTerm] | None:
        """The method's term, named after it (``None`` for a step without a target batch)."""
        pair = paired_features(features, target_features)
        if pair is None:
            return None
        return [LossTerm(self.name, self.distance(*pair), weight=self.weight)]
