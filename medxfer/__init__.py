"""medxfer: transfer learning for medical images.

The public API for plugin authors is :mod:`medxfer.api`, re-exported here
(``import medxfer`` then ``medxfer.hookimpl``, ``medxfer.Strategy``, ``medxfer.Backbone``);
plugins should not import private modules of the core. The Python API for notebooks and
scripts (:mod:`medxfer.python_api`: ``medxfer.run``, ``medxfer.predict``,
``medxfer.load_run``, ``medxfer.inspect``) is re-exported too. Names that need PyTorch are
imported on first use, so ``import medxfer`` stays light.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from medxfer import api
from medxfer.plugins import build_registries, create_plugin_manager

try:
    __version__ = version("medxfer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

#: The names of :mod:`medxfer.python_api`, imported on first use (it needs PyTorch).
PYTHON_API = ("RunResult", "inspect", "load_run", "predict", "run")

__all__ = sorted([*api.__all__, *PYTHON_API, "__version__", "build_registries",
                  "create_plugin_manager"])


def __getattr__(name: str) -> Any:
    """A name of :mod:`medxfer.api` or :mod:`medxfer.python_api` (those that need PyTorch
    are imported on first use)."""
    if name in api.__all__:
        return getattr(api, name)
    if name in PYTHON_API:
        return getattr(importlib.import_module("medxfer.python_api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(api.__all__) | set(PYTHON_API))
