"""What the built-in combiners share beyond :class:`medxfer.api.Combiner`: the (weighted)
mean over members.

Not an entry point: each combiner module imports from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medxfer.api import normalise

if TYPE_CHECKING:  # pragma: no cover
    import torch


def weighted_mean(probs: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The (weighted) mean over members of ``[E, N, C, *spatial]``, renormalised over ``C``."""
    if weights is None:
        mean = probs.mean(dim=0)
    else:
        mean = (probs * weights.view(-1, *[1] * (probs.ndim - 1))).sum(dim=0)
    return normalise(mean)
