"""``vote``: majority vote of the members' predicted classes.

Each member votes for its most probable class (per case, or per voxel of a segmentation
probability map); a member's vote counts its weight (all equal by default). The result is
a distribution over classes that sums to one:

* ``output: share`` (default) gives each class its share of the votes, nudged by
  ``TIE_BREAK`` (0.1%) toward the members' (weighted) mean probability:
  ``(1 - TIE_BREAK) * vote_share + TIE_BREAK * mean_probability``. Its most probable class
  is the majority class, and a tie goes to the tied class with the higher mean probability.
  With unequal weights, vote shares closer than about 0.1% count as tied.
* ``output: onehot`` gives probability 1 to that winning class and 0 to the others.

Vote shares are coarse probabilities (multiples of ``1/E`` for ``E`` equal members), so
AUC and calibration of a vote are usually worse than those of ``mean``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import medxfer
from medxfer.api import Combiner, check_weight_option, combiner_option_error
from medxfer_plugins.combiners._common import weighted_mean

if TYPE_CHECKING:  # pragma: no cover
    import torch

TIE_BREAK = 1e-3
OUTPUTS = ("share", "onehot")


class VoteCombiner(Combiner):
    """Majority vote of member argmax predictions, ties broken by mean probability."""

    name = "vote"

    def _combine(self, probs: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        import torch

        n_members = probs.shape[0]
        if weights is None:
            weights = torch.full((n_members,), 1.0 / n_members, dtype=probs.dtype,
                                 device=probs.device)
        winners = probs.argmax(dim=2, keepdim=True)  # [E, N, 1, *spatial]
        votes = torch.zeros_like(probs).scatter_(2, winners, 1.0)
        share = (votes * weights.view(-1, *[1] * (probs.ndim - 1))).sum(dim=0)
        result = (1 - TIE_BREAK) * share + TIE_BREAK * weighted_mean(probs, weights)
        if self.options["output"] == "onehot":
            result = torch.zeros_like(result).scatter_(1, result.argmax(dim=1, keepdim=True), 1.0)
        return result


def vote(weights: Sequence[float] | None = None, output: str = "share") -> VoteCombiner:
    """Majority vote of the members' predicted classes (classification and segmentation).

    Args:
        weights: One non-negative vote weight per member (default: equal votes).
        output: ``share`` (vote shares, ties broken by mean probability) or ``onehot``
            (the winning class gets probability 1).
    """
    if output not in OUTPUTS:
        raise combiner_option_error("vote", "output", f"choose one of {', '.join(OUTPUTS)}, "
                                                      f"got {output!r}")
    return VoteCombiner(weights=check_weight_option(weights, combiner="vote"), output=output)


@medxfer.hookimpl
def medxfer_register_combiners(register):
    """Register ``vote``."""
    register("vote", vote, description="majority vote of member predictions, ties broken by "
                                       "mean probability")
