"""What the built-in domain-adaptation plugins share: option checks, ``describe()``,
pairing source and target features.

Not an entry point: each method's module imports from here. Option checks raise
:class:`medxfer.errors.ConfigError` naming the config key ``domain_adaptation.<option>``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

import medxfer
from medxfer.engine.context import FitContext, LossTerm
from medxfer.errors import ConfigError
from medxfer_plugins._named import NamedPlugin


def option_error(option: str, message: str) -> ConfigError:
    """A ConfigError naming ``domain_adaptation.<option>``."""
    return ConfigError(f"domain_adaptation.{option}: {message}")


def check_float(option: str, value: Any, *, minimum: float | None = None,
                exclusive: bool = False) -> float:
    """Check that ``value`` is a finite number (``>= minimum``, or ``>`` when ``exclusive``).

    Raises:
        ConfigError: naming ``domain_adaptation.<option>`` and the allowed range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise option_error(option, f"expected a number, got {value!r}")
    value = float(value)
    if minimum is not None and (value < minimum or (exclusive and value == minimum)):
        raise option_error(option, f"must be {'>' if exclusive else '>='} {minimum:g}, "
                                   f"got {value:g}")
    return value


def check_int(option: str, value: Any, *, minimum: int) -> int:
    """Check that ``value`` is an integer of at least ``minimum``.

    Raises:
        ConfigError: naming ``domain_adaptation.<option>``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise option_error(option, f"expected an integer >= {minimum}, got {value!r}")
    return value


def check_floats(option: str, values: Any, *, minimum: float) -> list[float]:
    """Check a non-empty list of numbers, each ``> minimum``.

    Raises:
        ConfigError: naming ``domain_adaptation.<option>``.
    """
    if not isinstance(values, (list, tuple)) or not values:
        raise option_error(option, f"expected a non-empty list of numbers, got {values!r}")
    return [check_float(option, v, minimum=minimum, exclusive=True) for v in values]


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
