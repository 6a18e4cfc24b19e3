"""DANN's gradient-reversal layer as a torch autograd function.

Not an entry point: ``dann`` imports it when a run uses it, as it needs torch.
"""

from __future__ import annotations

from typing import Any

import torch


class ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by ``-coeff`` on the way back."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:  # noqa: D102
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return -ctx.coeff * grad, None
