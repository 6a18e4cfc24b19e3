"""Multi-kernel maximum mean discrepancy (Long et al., DAN, ICML 2015).

The loss is the (biased) squared MMD between source and target pooled features under a
sum of Gaussian kernels ``exp(-||x - y||^2 / s_i)``. The bandwidths ``s_i`` are
``base * kernel_mul ** (i - kernel_num // 2)``, ``i = 0 .. kernel_num - 1``, around the
mean squared distance between all features of the step (computed without gradient), as
in DAN's reference code. Added to the task loss with the config's ``weight``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import medxfer
from medxfer.api import FeatureDistance
from medxfer_plugins.domain_adaptation._common import check_float, check_int

if TYPE_CHECKING:  # pragma: no cover
    import torch


def gaussian_kernels(x: torch.Tensor, *, kernel_num: int, kernel_mul: float) -> torch.Tensor:
    """Sum of ``kernel_num`` Gaussian kernel matrices over the rows of ``x [N, F]``."""
    import torch

    sq = torch.cdist(x, x).pow(2)
    n = x.shape[0]
    base = sq.detach().sum() / max(n * n - n, 1)
    base = base.clamp_min(1e-8) / (kernel_mul ** (kernel_num // 2))
    return sum(torch.exp(-sq / (base * kernel_mul ** i)) for i in range(kernel_num))


def mmd_loss(source: torch.Tensor, target: torch.Tensor, *, kernel_num: int = 5,
             kernel_mul: float = 2.0) -> torch.Tensor:
    """Biased multi-kernel MMD^2 between ``source [N, F]`` and ``target [M, F]``."""
    import torch

    n = source.shape[0]
    k = gaussian_kernels(torch.cat([source, target]), kernel_num=kernel_num,
                         kernel_mul=kernel_mul)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class MMD(FeatureDistance):
    """Add the multi-kernel MMD between source and target features.

    Args:
        weight: Scale of the MMD term in the total loss.
        kernel_num: Number of Gaussian kernels.
        kernel_mul: Ratio between neighbouring bandwidths.
    """

    name = "mmd"

    def __init__(self, weight: float, kernel_num: int, kernel_mul: float) -> None:
        super().__init__(weight=weight, kernel_num=kernel_num, kernel_mul=kernel_mul)
        self.weight, self.kernel_num, self.kernel_mul = weight, kernel_num, kernel_mul

    def distance(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The multi-kernel MMD between the features."""
        return mmd_loss(source, target, kernel_num=self.kernel_num, kernel_mul=self.kernel_mul)


def mmd(weight: float = 1.0, kernel_num: int = 5, kernel_mul: float = 2.0) -> MMD:
    """Multi-kernel MMD between source and target features (DAN).

    Raises:
        ConfigError: for a negative ``domain_adaptation.weight``, ``kernel_num`` < 1 or
            ``kernel_mul`` <= 1.
    """
    return MMD(check_float("weight", weight, minimum=0.0),
               check_int("kernel_num", kernel_num, minimum=1),
               check_float("kernel_mul", kernel_mul, minimum=1.0, exclusive=True))


@medxfer.hookimpl
def medxfer_register_domain_adaptation(register):
    """Register ``mmd``."""
    register("mmd", mmd, description="multi-kernel MMD between source and target features (DAN)")
