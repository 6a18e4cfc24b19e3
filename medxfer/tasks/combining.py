"""Calling a combiner plugin on ensemble members' outputs, the same for every task."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medxfer.errors import PluginError
from medxfer.plugin_kit import attributes as plugin_attributes


def fit_combiner(combiner: Any, val_outputs: Any, val_targets: Any,
                 member_scores: list[float] | None) -> None:
    """Call the combiner's ``fit`` (validation data only) when it has one."""
    plugin_attributes.fit_on_validation(combiner, val_outputs, val_targets, member_scores)


def combine(combiner: Any, outputs: Any, name: str) -> torch.Tensor:
    """``combiner.combine(outputs)`` (or ``combiner(outputs)``), checked and renormalised.

    Raises:
        PluginError: when the result does not have the shape ``[N, C, *spatial]``.
    """
    fn = getattr(combiner, "combine", None) or combiner
    result = fn(outputs)
    result = (result.detach() if isinstance(result, torch.Tensor)
              else torch.from_numpy(np.asarray(result))).cpu().double()
    expected = tuple(outputs.shape[1:])
    if tuple(result.shape) != expected:
        raise PluginError(f"combiner {name!r} returned shape {list(result.shape)} for member "
                          f"outputs {list(outputs.shape)}; expected {list(expected)}")
    return result / result.sum(dim=1, keepdim=True).clamp_min(1e-12)
