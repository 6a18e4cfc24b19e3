"""``weighted``: a mean of the members' probabilities weighted by their validation scores.

Better members count more. The weights come, in this order of preference, from:

1. the ``weights`` option (one per member, as given);
2. the members' validation scores passed to :meth:`WeightedCombiner.fit` (``medxfer
   ensemble`` passes the validation AUC for classification, falling back to accuracy
   where AUC is undefined, and the mean foreground Dice for segmentation): each weight is
   ``max(score, 0) ** power``, normalised to sum to one (equal weights, with a warning,
   when every member scores 0);
3. failing both, each member's accuracy on the validation outputs and labels given to
   ``fit`` (the argmax per case, or per voxel).

Only validation data is ever used to choose the weights.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import medxfer
from medxfer.api import (Combiner, ConfigError, as_member_probs, check_weight_option,
                         combiner_option_error)
from medxfer_plugins.combiners._common import weighted_mean

if TYPE_CHECKING:  # pragma: no cover
    import torch


class WeightedCombiner(Combiner):
    """Weighted mean of member probabilities; weights from validation scores or options."""

    name = "weighted"
    needs_fit = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.weights: list[float] | None = options.get("weights")
        self.weight_source = "option" if self.weights is not None else None
        self.fitted = self.weights is not None  # explicit weights need no validation data

    def fit(self, val_outputs: Any, val_targets: Any = None,
            member_scores: Sequence[float] | None = None) -> WeightedCombiner:
        """Choose the weights (see the module docstring); returns ``self``.

        Raises:
            ConfigError: when there is nothing to weight by, or every member scores 0.
        """
        if self.options.get("weights") is not None:
            self.fitted = True
            return self
        if member_scores is not None:
            scores, self.weight_source = [_score(s) for s in member_scores], "member scores"
        elif val_outputs is not None and val_targets is not None:
            scores = _accuracies(as_member_probs(val_outputs, combiner=self.name), val_targets)
            self.weight_source = "validation accuracy"
        else:
            raise ConfigError("combiner 'weighted' needs the members' validation scores, or "
                              "validation outputs and labels, or the weights option")
        power = self.options["power"]
        raw = [max(s, 0.0) ** power for s in scores]
        if not raw:
            raise ConfigError("combiner 'weighted': no member scores were given")
        if sum(raw) <= 0:
            warnings.warn(f"combiner 'weighted': every member's validation score is 0 or "
                          f"undefined ({scores}); weighting the members equally", stacklevel=2)
            raw, self.weight_source = [1.0] * len(raw), "equal (every member scored 0)"
        self.weights = [w / sum(raw) for w in raw]
        self.member_scores = scores
        self.fitted = True
        return self

    def default_weights(self) -> Sequence[float] | None:
        """The chosen weights."""
        return self.weights

    def _combine(self, probs: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        return weighted_mean(probs, weights)

    def describe(self) -> dict[str, Any]:
        """Options, the weights in use and where they came from."""
        return {**super().describe(), "weights_used": self.weights,
                "weight_source": self.weight_source}


def _score(value: Any) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return 0.0
    value = float(value)
    return value if math.isfinite(value) else 0.0


def _accuracies(probs: torch.Tensor, targets: Any) -> list[float]:
    """Each member's share of cases (or voxels) whose argmax is the label."""
    import numpy as np
    import torch

    target = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor)
                             else targets).to(probs.device).long()
    predicted = probs.argmax(dim=2)  # [E, N, *spatial]
    if target.ndim == predicted.ndim:  # [N, 1, *spatial] label maps
        target = target[:, 0]
    if tuple(target.shape) != tuple(predicted.shape[1:]):
        raise ValueError(f"combiner 'weighted': labels shaped {list(target.shape)} do not fit "
                         f"outputs shaped {list(probs.shape)}")
    return [float((p == target).double().mean()) for p in predicted]


def weighted(weights: Sequence[float] | None = None, power: float = 1.0) -> WeightedCombiner:
    """Mean of member probabilities weighted by each member's validation score.

    Args:
        weights: Explicit weights, one per member; skips the validation scores.
        power: Exponent applied to the scores before normalising (larger favours the
            best members more; 0 gives equal weights).
    """
    if isinstance(power, bool) or not isinstance(power, numbers.Real) \
            or not math.isfinite(power) or power < 0:
        raise combiner_option_error("weighted", "power", f"expected a number >= 0, got "
                                                         f"{power!r}")
    return WeightedCombiner(weights=check_weight_option(weights, combiner="weighted"),
                            power=float(power))


@medxfer.hookimpl
def medxfer_register_combiners(register):
    """Register ``weighted``."""
    register("weighted", weighted,
             description="mean of member probabilities weighted by validation score")
