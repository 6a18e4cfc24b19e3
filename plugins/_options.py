"""Option checks shared by the built-in plugin kinds.

Not an entry point. Each kind binds its config section once (``OptionChecks("strategy")``)
so that every error names the key a user has to fix, e.g. ``strategy.decay: must be > 0,
got 0``.
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
