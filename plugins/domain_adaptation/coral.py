"""Deep CORAL (Sun & Saenko, ECCV 2016 workshops): align second-order statistics.

The loss is the squared Frobenius distance between the covariance matrices of the
source and target pooled features, ``||C_S - C_T||_F^2 / (4 d^2)`` with ``d`` the feature
width, added to the task loss with the config's ``weight``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import medxfer
from medxfer.api import FeatureDistance
from medxfer_plugins.domain_adaptation._common import check_float

if TYPE_CHECKING:  # pragma: no cover
    import torch


def covariance(x: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance ``[F, F]`` of rows ``x [N, F]`` (``N >= 2``)."""
    centred = x - x.mean(dim=0, keepdim=True)
    return centred.T @ centred / max(x.shape[0] - 1, 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||cov(source) - cov(target)||_F^2 / (4 d^2)`` for features ``[N, d]``."""
    d = source.shape[1]
    return (covariance(source) - covariance(target)).pow(2).sum() / (4.0 * d * d)


class Coral(FeatureDistance):
    """Add the CORAL loss between source and target features.

    Args:
        weight: Scale of the CORAL term in the total loss.
    """

    name = "coral"

    def __init__(self, weight: float) -> None:
        super().__init__(weight=weight)
        self.weight = weight

    def distance(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The CORAL loss between the features."""
        return coral_loss(source, target)


def coral(weight: float = 1.0) -> Coral:
    """Deep CORAL: match the covariance of source and target features.

    Raises:
        ConfigError: when ``domain_adaptation.weight`` is negative or not a number.
    """
    return Coral(check_float("weight", weight, minimum=0.0))


@medxfer.hookimpl
def medxfer_register_domain_adaptation(register):
    """Register ``coral``."""
    register("coral", coral, description="Deep CORAL: align the covariance of source and "
                                         "target features")
