"""``mean``: the average of the members' probabilities, optionally weighted.

The simplest ensemble and usually a strong one: each class's probability is the (weighted)
mean of the members' probabilities for it, per case (classification) or per voxel
(segmentation probability maps). It learns nothing from validation data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import medxfer
from medxfer.api import Combiner, check_weight_option
from medxfer_plugins.combiners._common import weighted_mean

if TYPE_CHECKING:  # pragma: no cover
    import torch


class MeanCombiner(Combiner):
    """Mean of member probabilities; ``weights`` (one per member) make it a weighted mean."""

    name = "mean"

    def _combine(self, probs: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        return weighted_mean(probs, weights)


def mean(weights: Sequence[float] | None = None) -> MeanCombiner:
    """Average the members' probabilities (classification and segmentation).

    Args:
        weights: One non-negative weight per member, in the order the runs are given
            (normalised to sum to one); all members count equally when omitted.
    """
    return MeanCombiner(weights=check_weight_option(weights, combiner="mean"))


@medxfer.hookimpl
def medxfer_register_combiners(register):
    """Register ``mean``."""
    register("mean", mean, description="mean of member probabilities (optionally weighted)")
