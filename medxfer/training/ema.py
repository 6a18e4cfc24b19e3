"""An exponential moving average of the weights (``train.ema``), through PyTorch's
:class:`torch.optim.swa_utils.AveragedModel`.

With a small dataset the weights after any one step are noisy; their running average is
usually a better and steadier model. When ``train.ema`` is set, the averaged copy is what
validation scores, what the best checkpoint stores and what the run delivers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class WeightAverage:
    """``theta_ema <- decay * theta_ema + (1 - decay) * theta`` after every optimizer step.

    Batch-norm statistics are averaged as well (``use_buffers``), so the averaged network
    is ready to evaluate without a further pass over the data.

    Args:
        model: The network being trained (it is copied, not changed).
        decay: The average's decay per step, in (0, 1); 0.99 averages roughly the last
            100 steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self._averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
                                       use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The averaged network (same class and state-dict keys as the trained one)."""
        return self._averaged.module

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average."""
        self._averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Any]:
        """The average's weights and step count, for a training checkpoint."""
        return {"module": self.module.state_dict(),
                "n_averaged": self._averaged.n_averaged.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.module.load_state_dict(state["module"])
        self._averaged.n_averaged.copy_(state["n_averaged"])
