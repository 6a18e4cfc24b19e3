"""``stacking``: a logistic-regression meta-learner over the members' probabilities.

:meth:`StackingCombiner.fit` trains scikit-learn's ``LogisticRegression`` (multinomial,
L2-regularised) on the validation split only: each validation case is one row of the
members' probabilities side by side (``E * C`` features) and its label is the target.
:meth:`StackingCombiner.combine` takes member outputs and nothing else, so test labels
never reach the meta-learner; it refuses to run before ``fit``.

Classification only: stacking per voxel is not offered (a ConfigError for outputs with
spatial axes). A class absent from the validation labels gets probability 0.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, Sequence

import medxfer
from medxfer.api import Combiner, ConfigError, as_member_probs, combiner_option_error, normalise

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

CLASS_WEIGHTS = (None, "balanced")


class StackingCombiner(Combiner):
    """Logistic regression on concatenated member probabilities, fitted on validation."""

    name = "stacking"
    supports_spatial = False
    accepts_weights = False
    needs_fit = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.model: Any = None
        self.shape: tuple[int, int] | None = None  # (members, classes) seen by fit
        self.n_fit = 0

    def fit(self, val_outputs: Any, val_targets: Any = None,
            member_scores: Sequence[float] | None = None) -> StackingCombiner:
        """Fit the meta-learner on validation outputs ``[E, N_val, C]`` and labels ``[N_val]``.

        Raises:
            ConfigError: for segmentation outputs, missing labels, or labels of one class.
        """
        import numpy as np
        import torch

        if val_outputs is None or val_targets is None:
            raise ConfigError("combiner 'stacking' is fitted on validation outputs and labels; "
                              "none were given")
        probs = as_member_probs(val_outputs, combiner=self.name)
        if probs.ndim > 3:
            raise ConfigError("combiner 'stacking' is for classification only (outputs "
                              f"[E, N, C]); got {list(probs.shape)}: use mean, vote or weighted "
                              "for segmentation")
        y = np.asarray(val_targets.cpu() if isinstance(val_targets, torch.Tensor)
                       else val_targets).astype(np.int64).ravel()
        if y.size != probs.shape[1]:
            raise ValueError(f"combiner 'stacking': {y.size} labels for {probs.shape[1]} cases")
        if np.unique(y).size < 2:
            raise ConfigError("combiner 'stacking' needs validation labels of at least two "
                              "classes to fit its meta-learner")
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=self.options["C"], max_iter=self.options["max_iter"],
                                        class_weight=self.options["class_weight"])
        self.model.fit(_features(probs), y)
        self.shape = (int(probs.shape[0]), int(probs.shape[2]))
        self.n_fit = int(y.size)
        self.fitted = True
        return self

    def _combine(self, probs: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        import numpy as np
        import torch

        if self.shape != (probs.shape[0], probs.shape[2]):
            raise ValueError(f"combiner 'stacking' was fitted on {self.shape[0]} members x "
                             f"{self.shape[1]} classes, got outputs shaped {list(probs.shape)}")
        fitted = self.model.predict_proba(_features(probs))
        out = np.zeros((probs.shape[1], probs.shape[2]), dtype=np.float64)
        out[:, self.model.classes_] = fitted
        return normalise(torch.from_numpy(out).to(dtype=probs.dtype, device=probs.device))

    def describe(self) -> dict[str, Any]:
        """Options plus the number of validation cases the meta-learner was fitted on."""
        return {**super().describe(), "fitted_on": "validation", "fit_cases": self.n_fit}


def _features(probs: torch.Tensor) -> np.ndarray:
    """``[E, N, C]`` -> ``[N, E * C]`` (member 0's classes first)."""
    return probs.permute(1, 0, 2).reshape(probs.shape[1], -1).double().cpu().numpy()


def stacking(C: float = 1.0, max_iter: int = 1000,
             class_weight: str | None = None) -> StackingCombiner:
    """Logistic-regression meta-learner fitted on validation outputs (classification only).

    Args:
        C: Inverse L2 regularisation strength of the logistic regression (scikit-learn's
            ``C``); smaller is stronger, which suits small validation sets.
        max_iter: Iterations of the solver.
        class_weight: ``balanced`` to weight classes by inverse validation frequency.
    """
    if isinstance(C, bool) or not isinstance(C, numbers.Real) or not math.isfinite(C) or C <= 0:
        raise combiner_option_error("stacking", "C", f"expected a number > 0, got {C!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise combiner_option_error("stacking", "max_iter",
                                    f"expected an integer >= 1, got {max_iter!r}")
    if class_weight not in CLASS_WEIGHTS:
        raise combiner_option_error("stacking", "class_weight",
                                    f"expected balanced or null, got {class_weight!r}")
    return StackingCombiner(C=float(C), max_iter=max_iter, class_weight=class_weight)


@medxfer.hookimpl
def medxfer_register_combiners(register):
    """Register ``stacking``."""
    register("stacking", stacking, description="logistic-regression meta-learner fitted on "
                                               "validation outputs (classification)")
