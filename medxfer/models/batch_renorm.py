"""Batch renormalisation (Ioffe, "Batch Renormalization: Towards Reducing Minibatch
Dependence in Batch-Normalized Models", NeurIPS 2017) for fine-tuning.

In training, batch norm normalises with the batch's statistics; batch renorm corrects
them towards the running (here: pretrained) ones,

    x_hat = (x - mean_B) / std_B * r + d,  r = clip(std_B / std, 1/r_max, r_max),
                                           d = clip((mean_B - mean) / std, -d_max, d_max),

with ``r`` and ``d`` treated as constants in backpropagation, so that training sees the
same normalisation as inference once the statistics agree. Small or unrepresentative
batches (3D volumes, a few dozen images per class) then move a pretrained network less.
``model.batch_renorm`` swaps every batch norm of the backbone for :class:`BatchRenorm`,
keeping its parameters and running statistics (:func:`use_batch_renorm`).
"""

from __future__ import annotations

from typing import Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medxfer.models.module_swap import swap_layers

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class BatchRenorm(_BatchNorm):
    """Batch renormalisation over ``[N, C, *spatial]`` (any number of spatial axes).

    A batch norm in every other respect: the same parameters, buffers and state-dict keys,
    the running statistics in evaluation, and it counts as one for the code that treats
    batch norms specially (frozen norms kept in eval mode, AdaBN...).

    Args:
        num_features: Channels.
        r_max: Bound of the standard-deviation correction ``r`` (>= 1; 1 is batch norm).
        d_max: Bound of the mean correction ``d`` (>= 0; 0 is batch norm).
        eps, momentum, affine: As for ``nn.BatchNorm2d``.
    """

    def __init__(self, num_features: int, *, r_max: float = 3.0, d_max: float = 5.0,
                 eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=True)
        if r_max < 1 or d_max < 0:
            raise ValueError(f"BatchRenorm needs r_max >= 1 and d_max >= 0, got {r_max}, {d_max}")
        self.r_max = float(r_max)
        self.d_max = float(d_max)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}"

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        axes = [0, *range(2, x.dim())]
        count = x.numel() // x.shape[1]
        if count < 2:
            raise ValueError("BatchRenorm needs more than one value per channel in training, "
                             f"got input of shape {tuple(x.shape)}")
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(axes)
        var = x.var(axes, unbiased=False)
        std = (var + self.eps).sqrt()
        with torch.no_grad():
            running_std = (self.running_var + self.eps).sqrt()
            r = (std / running_std).clamp(1 / self.r_max, self.r_max)
            d = ((mean - self.running_mean) / running_std).clamp(-self.d_max, self.d_max)
            self._update_running_stats(mean, var * count / (count - 1))
        out = (x - mean.view(shape)) / std.view(shape) * r.view(shape) + d.view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                  else self.momentum)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


def batch_renorm_from(norm: _BatchNorm, *, r_max: float, d_max: float) -> BatchRenorm:
    """A :class:`BatchRenorm` holding ``norm``'s own parameters and running statistics."""
    new = BatchRenorm(norm.num_features, r_max=r_max, d_max=d_max, eps=norm.eps,
                      momentum=norm.momentum, affine=norm.affine)
    new.weight, new.bias = norm.weight, norm.bias
    if norm.track_running_stats:
        new.running_mean, new.running_var = norm.running_mean, norm.running_var
        new.num_batches_tracked = norm.num_batches_tracked
    new.train(norm.training)
    return new


def use_batch_renorm(net: nn.Module, groups: Sequence[nn.Module] = (), *, r_max: float = 3.0,
                     d_max: float = 5.0, only: Collection[int] | None = None) -> int:
    """Swap every batch norm of ``net`` (and of its layer ``groups``) for batch renorm, in
    place, keeping parameters and statistics; return how many were swapped.

    ``only``, when given, holds the ``id`` of the modules that may be swapped.

    Batch norms without running statistics (``track_running_stats=False``) are left alone:
    there is nothing to renormalise towards.
    """
    count = 0

    def convert(module: nn.Module) -> nn.Module | None:
        nonlocal count
        if type(module) in _BATCH_NORMS and module.track_running_stats \
                and (only is None or id(module) in only):
            count += 1
            return batch_renorm_from(module, r_max=r_max, d_max=d_max)
        return None

    swap_layers(net, convert, groups)
    return count
