"""Multi-kernel maximum mean discrepancy (Long et al., DAN, ICML 2015).

The loss is the (biased) squared MMD between source and target pooled features under a
sum of Gaussian kernels ``exp(-||x - y||^2 / s_i)``. The bandwidths ``s_i`` are
``base * kernel_mul ** (i - kernel_num // 2)``, ``i = 0 .. kernel_num - 1``, around the
mean squared distance between all features of the step (computed without gradient), as
in DAN's reference code. Added to the task loss with the config's ``weight``.
"""

from __future__ import annotations

import torch

import medxfer
from medxfer.engine.context import FitContext, LossTerm
from medxfer_plugins.domain_adaptation._common import (DomainAdaptation, check_float,
                                                       check_int, paired_features)


def gaussian_kernels(x: torch.Tensor, *, kernel_num: int, kernel_mul: float) -> torch.Tensor:
    """Sum of ``kernel_num`` Gaussian kernel matrices over the rows of ``x [N, F]``."""
    sq = torch.cdist(x, x).pow(2)
    n = x.shape[0]
    base = sq.detach().sum() / max(n * n - n, 1)
    base = base.clamp_min(1e-8) / (kernel_mul ** (kernel_num // 2))
    return sum(torch.exp(-sq / (base * kernel_mul ** i)) for i in range(kernel_num))


def mmd_loss(source: torch.Tensor, target: torch.Tensor, *, kernel_num: int = 5,
             kernel_mul: float = 2.0) -> torch.Tensor:
    """Biased multi-kernel MMD^2 between ``source [N, F]`` and ``target [M, F]``."""
    n = source.shape[0]
    k = gaussian_kernels(torch.cat([source, target]), kernel_num=kernel_num,
                         kernel_mul=kernel_mul)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class MMD(DomainAdaptation):
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

    @medxfer.hookimpl
    def medxfer_extra_loss_terms(self, ctx: FitContext, features: torch.Tensor,
                                 target_features: torch.Tensor | None) -> list[LossTerm] | None:
        """The MMD term (``None`` for a step without a target batch)."""
        pair = paired_features(features, target_features)
        if pair is None:
            return None
        value = mmd_loss(*pair, kernel_num=self.kernel_num, kernel_mul=self.kernel_mul)
        return [LossTerm("mmd", value, weight=self.weight)]


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
