"""The option checks that strategies and domain-adaptation methods share."""

from __future__ import annotations

import pytest

from medxfer.errors import ConfigError
from medxfer.plugin_kit.options import OptionChecks

CHECKS = OptionChecks("strategy")


def test_numbers_are_floats_within_their_bounds():
    assert CHECKS.number("lr", 1) == 1.0 and isinstance(CHECKS.number("lr", 1), float)
    assert CHECKS.number("decay", 0.0, minimum=0.0) == 0.0
    with pytest.raises(ConfigError, match=r"^strategy\.decay: must be > 0, got 0$"):
        CHECKS.number("decay", 0, minimum=0.0, exclusive=True)
    with pytest.raises(ConfigError, match=r"strategy\.decay: must be <= 1, got 1\.5"):
        CHECKS.number("decay", 1.5, maximum=1.0)
    for bad in (True, "0.1", None, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="strategy.lr: expected a number"):
            CHECKS.number("lr", bad)


def test_integers_and_flags():
    assert CHECKS.integer("groups", 3, minimum=1) == 3
    with pytest.raises(ConfigError, match=r"domain_adaptation\.k: must be >= 1, got 0"):
        OptionChecks("domain_adaptation").integer("k", 0, minimum=1)
    for bad in (True, 2.0, "2"):
        with pytest.raises(ConfigError, match="expected an integer"):
            CHECKS.integer("groups", bad)
    assert CHECKS.flag("bn", False) is False
    with pytest.raises(ConfigError, match="strategy.bn: expected true or false, got 'yes'"):
        CHECKS.flag("bn", "yes")
