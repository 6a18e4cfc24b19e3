"""medxfer: transfer learning for medical images.

The public API for plugin authors is what this module exports; plugins should not
import private modules of the core.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from medxfer.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    MedxferError,
    PluginError,
    WeightsError,
)
from medxfer.hookspecs import hookimpl
from medxfer.plugins import build_registries, create_plugin_manager

try:
    __version__ = version("medxfer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MedxferError",
    "PluginError",
    "WeightsError",
    "__version__",
    "build_registries",
    "create_plugin_manager",
    "hookimpl",
]
