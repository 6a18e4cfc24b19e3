"""What the built-in strategies share: option checking, ``describe()``, layer-group access.

Not an entry point: each strategy module imports from here. Option checks raise
:class:`medxfer.errors.ConfigError` naming the config key ``strategy.<option>``.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

import medxfer
from medxfer.engine.context import FitContext
from medxfer.engine.freezing import keep_frozen_norms_in_eval
from medxfer.errors import ConfigError
from medxfer_plugins._named import NamedPlugin


def option_error(option: str, message: str) -> ConfigError:
    """A ConfigError naming ``strategy.<option>``."""
    return ConfigError(f"strategy.{option}: {message}")


def check_float(option: str, value: Any, *, minimum: float | None = None,
                maximum: float | None = None, min_inclusive: bool = True) -> float:
    """Check that ``value`` is a finite number within bounds and return it as a float.

    Raises:
        ConfigError: naming ``strategy.<option>`` and the allowed range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise option_error(option, f"expected a number, got {value!r}")
    value = float(value)
    if minimum is not None and (value < minimum or (not min_inclusive and value == minimum)):
        bound = ">=" if min_inclusive else ">"
        raise option_error(option, f"must be {bound} {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise option_error(option, f"must be <= {maximum:g}, got {value:g}")
    return value


def check_int(option: str, value: Any, *, minimum: int | None = None) -> int:
    """Check that ``value`` is an integer (not a bool) of at least ``minimum``.

    Raises:
        ConfigError: naming ``strategy.<option>``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise option_error(option, f"expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise option_error(option, f"must be >= {minimum}, got {value}")
    return value


def check_bool(option: str, value: Any) -> bool:
    """Check that ``value`` is a bool.

    Raises:
        ConfigError: naming ``strategy.<option>``.
    """
    if not isinstance(value, bool):
        raise option_error(option, f"expected true or false, got {value!r}")
    return value


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
    """Base of the built-in strategies.

    Subclasses set :attr:`name`, store their options in :attr:`options` and implement the
    lifecycle hooks they need with ``@medxfer.hookimpl``. This base implements
    ``medxfer_epoch_start`` to keep the normalisation layers of frozen groups in evaluation
    mode after the trainer's ``model.train()``; a subclass that overrides it calls
    :meth:`lock_frozen_norms`.

    Attributes:
        name: The registered name.
        uses_pretrained: ``False`` asks the core to build the backbone without pretrained
            weights (``scratch``).
        freezes_backbone: ``True`` when the whole backbone stays frozen for the whole run
            (``feature_extraction``); ``medxfer pretrain`` refuses such a strategy.
    """

    uses_pretrained: bool = True
    freezes_backbone: bool = False

    @staticmethod
    def lock_frozen_norms(ctx: FitContext) -> None:
        """Put the normalisation layers of frozen groups back into evaluation mode."""
        keep_frozen_norms_in_eval(ctx.model)

    @medxfer.hookimpl
    def medxfer_epoch_start(self, ctx: FitContext) -> None:
        """Undo ``model.train()`` for the normalisation layers of frozen groups."""
        self.lock_frozen_norms(ctx)
