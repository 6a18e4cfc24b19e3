"""Building a task's network from the configured backbone plugin."""

from __future__ import annotations

from typing import Any

from medxfer.errors import PluginError
from medxfer.plugins import Registries


def backbone_entry(config: Any, registries: Registries) -> Any:
    """The registry entry of ``model.backbone.name`` (unknown names: "did you mean")."""
    return registries.backbone.get(config.model.backbone.name, key="model.backbone.name")


def require_type(built: Any, expected: type, entry: Any) -> None:
    """Refuse what a backbone plugin's factory returned unless it is an ``expected``.

    Raises:
        PluginError: naming the backbone, its plugin and distribution.
    """
    if not isinstance(built, expected):
        raise PluginError(
            f"model.backbone.name: {entry.name!r} of plugin {entry.plugin!r} "
            f"({entry.distribution} {entry.version}) returned {type(built).__name__}, not a "
            f"medxfer.models.{expected.__name__}; its factory must return one (see "
            "docs/plugin_hooks.md)")
