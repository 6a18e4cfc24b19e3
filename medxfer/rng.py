"""NumPy random states as tensors and numbers, the form ``weights_only`` checkpoint loading
accepts (used for the global NumPy state and for MONAI transforms' own ``RandomState``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def pack_numpy_state(state: tuple[Any, ...]) -> dict[str, Any]:
    """``np.random.get_state()`` / ``RandomState.get_state()`` as a checkpointable dict."""
    _, keys, pos, has_gauss, gauss = state
    return {"keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def unpack_numpy_state(saved: dict[str, Any]) -> tuple[Any, ...]:
    """The state tuple :func:`pack_numpy_state` packed, for ``set_state``."""
    return ("MT19937", saved["keys"].numpy().astype(np.uint32), saved["pos"],
            saved.get("has_gauss", 0), saved.get("gauss", 0.0))
