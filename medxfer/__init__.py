"""medxfer: transfer learning for medical images.

The public API for plugin authors is :mod:`medxfer.api`, re-exported here
(``import medxfer`` then ``medxfer.hookimpl``, ``medxfer.Strategy``, ``medxfer.Backbone``);
plugins should not import private modules of the core. Names that need PyTorch are
imported on first use, so ``import medxfer`` stays light.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from medxfer import api
from medxfer.plugins import build_registries, create_plugin_manager

try:
    __version__ = version("medxfer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = sorted([*api.__all__, "__version__", "build_registries", "create_plugin_manager"])


def __getattr__(name: str) -> Any:
    """A name of :mod:`medxfer.api` (those that need PyTorch are imported on first use)."""
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(api.__all__))
