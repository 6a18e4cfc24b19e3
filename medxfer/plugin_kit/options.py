"""Checks of a plugin's options, and a base that keeps them for the report.

A plugin kind binds its config section once (``OptionChecks("strategy")``) so that every
error names the key a user has to fix, e.g. ``strategy.decay: must be > 0, got 0``.
:data:`STRATEGY_OPTIONS` and :data:`DOMAIN_ADAPTATION_OPTIONS` are those of the two kinds
whose options come from a config section.
"""

from __future__ import annotations

import math
from typing import Any

from medxfer.errors import ConfigError


class OptionChecks:
    """Checks of plugin options whose errors name ``<section>.<option>``.

    Args:
        section: The config section the options come from (``strategy``,
            ``domain_adaptation``).
    """

    def __init__(self, section: str) -> None:
        self.section = section

    def error(self, option: str, message: str) -> ConfigError:
        """A ConfigError naming ``<section>.<option>``."""
        return ConfigError(f"{self.section}.{option}: {message}")

    def number(self, option: str, value: Any, *, minimum: float | None = None,
               maximum: float | None = None, exclusive: bool = False) -> float:
        """``value`` as a float, checked to be a finite number within the bounds.

        Args:
            minimum: Lower bound (``>=``; ``>`` when ``exclusive``).
            maximum: Upper bound (``<=``).

        Raises:
            ConfigError: naming the option and the allowed range.
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise self.error(option, f"expected a number, got {value!r}")
        value = float(value)
        if minimum is not None and (value < minimum or (exclusive and value == minimum)):
            raise self.error(option, f"must be {'>' if exclusive else '>='} {minimum:g}, "
                                     f"got {value:g}")
        if maximum is not None and value > maximum:
            raise self.error(option, f"must be <= {maximum:g}, got {value:g}")
        return value

    def integer(self, option: str, value: Any, *, minimum: int | None = None) -> int:
        """``value``, checked to be an integer (not a bool) of at least ``minimum``.

        Raises:
            ConfigError: naming the option.
        """
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(option, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(option, f"must be >= {minimum}, got {value}")
        return value

    def flag(self, option: str, value: Any) -> bool:
        """``value``, checked to be true or false.

        Raises:
            ConfigError: naming the option.
        """
        if not isinstance(value, bool):
            raise self.error(option, f"expected true or false, got {value!r}")
        return value


#: Checks naming ``strategy.<option>``.
STRATEGY_OPTIONS = OptionChecks("strategy")
#: Checks naming ``domain_adaptation.<option>``.
DOMAIN_ADAPTATION_OPTIONS = OptionChecks("domain_adaptation")


class NamedPlugin:
    """A plugin object with a registered :attr:`name` and the options it was built with.

    Subclass it for a strategy or domain-adaptation method: :meth:`describe` then reports
    the name and options in ``metrics.json`` and the report.

    Attributes:
        name: The registered name.
        options: The options given to the factory, as :meth:`describe` reports them.
    """

    name: str = ""

    def __init__(self, **options: Any) -> None:
        self.options = options

    def describe(self) -> dict[str, Any]:
        """The plugin's name and options, for ``metrics.json`` and the report."""
        return {"name": self.name, **self.options}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"
