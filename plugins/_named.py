"""A base for built-in plugin objects that keep their options for the report.

Not an entry point: the strategy and domain-adaptation bases subclass it.
"""

from __future__ import annotations

from typing import Any


class NamedPlugin:
    """A plugin object with a registered :attr:`name` and the options it was built with.

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
