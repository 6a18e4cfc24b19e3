"""The option checks of the built-in domain-adaptation methods, by short names, and what
the batch-norm methods share without torch.

Not an entry point: each method's module imports from here. The checks raise
:class:`medxfer.api.ConfigError` naming the config key ``domain_adaptation.<option>``.
"""

from __future__ import annotations

from medxfer.api import DOMAIN_ADAPTATION_OPTIONS

#: ``ConfigError`` naming ``domain_adaptation.<option>``; the checks below raise it.
option_error = DOMAIN_ADAPTATION_OPTIONS.error
check_float = DOMAIN_ADAPTATION_OPTIONS.number
check_int = DOMAIN_ADAPTATION_OPTIONS.integer

#: Where dsbn and adabn split batch norms: the whole network, or only the backbone (encoder).
SCOPES = ("all", "backbone")
