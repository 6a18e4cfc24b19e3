"""The option checks of the built-in strategies, by short names.

Not an entry point: each strategy module imports from here. The checks raise
:class:`medxfer.api.ConfigError` naming the config key ``strategy.<option>``.
"""

from __future__ import annotations

from medxfer.api import STRATEGY_OPTIONS

#: ``ConfigError`` naming ``strategy.<option>``; the checks below raise it.
option_error = STRATEGY_OPTIONS.error
check_float = STRATEGY_OPTIONS.number
check_int = STRATEGY_OPTIONS.integer
check_bool = STRATEGY_OPTIONS.flag
