"""DANN (Ganin et al., JMLR 2016): domain-adversarial training.

A domain discriminator (an MLP on the backbone's pooled features) learns to tell source
from target features; between the features and the discriminator sits a gradient-reversal
layer, identity in the forward pass and ``-lambda`` times the gradient in the backward
pass, so the same loss that trains the discriminator trains the backbone to confuse it.
``lambda`` ramps up over training as in the paper,
``lambda_p = lambda_max * (2 / (1 + exp(-gamma * p)) - 1)`` with ``p`` the share of
training steps done. The discriminator's loss (binary cross-entropy, source 0, target 1)
is added with the config's ``weight``.

The discriminator is outside the network (it is not saved with the model); its
parameters join the optimizer through ``medxfer_extra_parameter_groups``, and its
weights are kept in ``ctx.state`` so that a resumed run continues with them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import medxfer
from medxfer.api import DomainAdaptation, FitContext, LossTerm, paired_features
from medxfer_plugins.domain_adaptation._common import check_float, check_int

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

STATE_PREFIX = "dann.discriminator."


def reverse_gradient(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by ``-coeff`` on the way back."""
    from medxfer_plugins.domain_adaptation._gradient_reversal import ReverseGradient

    return ReverseGradient.apply(x, coeff)


def ramp(progress: float, *, gamma: float = 10.0) -> float:
    """DANN's schedule ``2 / (1 + exp(-gamma * p)) - 1`` for ``p`` in [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def discriminator(in_features: int, hidden: int) -> nn.Sequential:
    """The domain discriminator: two hidden layers, one logit (target = 1)."""
    from torch import nn

    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))


class DANN(DomainAdaptation):
    """Domain-adversarial training with a gradient-reversal layer.

    Args:
        weight: Scale of the domain loss in the total loss.
        hidden: Width of the discriminator's hidden layers.
        lambda_max: Final gradient-reversal weight.
        gamma: Steepness of the ramp-up.
        lr_scale: The discriminator's learning rate as a multiple of ``train.optimizer.lr``.
    """

    name = "dann"

    def __init__(self, weight: float, hidden: int, lambda_max: float, gamma: float,
                 lr_scale: float) -> None:
        super().__init__(weight=weight, hidden=hidden, lambda_max=lambda_max, gamma=gamma,
                         lr_scale=lr_scale)
        self.weight, self.hidden, self.lambda_max = weight, hidden, lambda_max
        self.gamma, self.lr_scale = gamma, lr_scale
        self.discriminator: nn.Module | None = None
        self.coeff = 0.0

    def coefficient(self, ctx: FitContext) -> float:
        """The gradient-reversal weight at the current step."""
        total = ctx.total_steps or 1
        return self.lambda_max * ramp(ctx.step / total, gamma=self.gamma)

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx: FitContext) -> None:
        """Build the discriminator on the backbone's feature width."""
        width = int(ctx.model.backbone.feature_dim)
        self.discriminator = discriminator(width, self.hidden).to(ctx.device)

    @medxfer.hookimpl
    def medxfer_extra_parameter_groups(self, ctx: FitContext,
                                       base_lr: float) -> list[dict[str, Any]]:
        """The discriminator's parameters, as their own group."""
        assert self.discriminator is not None, "medxfer_fit_start builds the discriminator"
        return [{"params": list(self.discriminator.parameters()), "name": "dann_discriminator",
                 "lr": base_lr * self.lr_scale}]

    @medxfer.hookimpl
    def medxfer_epoch_start(self, ctx: FitContext, epoch: int) -> None:
        """Restore the discriminator's weights on resume; put it in training mode."""
        import torch

        assert self.discriminator is not None
        with torch.no_grad():
            for key, tensor in self.discriminator.state_dict(keep_vars=True).items():
                saved = ctx.state.get(STATE_PREFIX + key)
                if isinstance(saved, torch.Tensor) and saved is not tensor:
                    tensor.copy_(saved.to(tensor.device))
        self.discriminator.train()

    @medxfer.hookimpl
    def medxfer_extra_loss_terms(self, ctx: FitContext, features: torch.Tensor,
                                 target_features: torch.Tensor | None) -> list[LossTerm] | None:
        """The domain-classification loss through the gradient-reversal layer."""
        import torch

        pair = paired_features(features, target_features)
        if pair is None or self.discriminator is None:
            return None
        self.coeff = self.coefficient(ctx)
        source, target = pair
        logits = self.discriminator(reverse_gradient(torch.cat([source, target]), self.coeff))
        domains = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).to(logits)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], domains)
        return [LossTerm("dann", loss, weight=self.weight)]

    @medxfer.hookimpl
    def medxfer_epoch_end(self, ctx: FitContext, epoch: int, metrics: dict[str, float]) -> None:
        """Log lambda; keep the discriminator's weights in ``ctx.state`` for resuming."""
        metrics["dann_lambda"] = self.coeff
        if self.discriminator is not None:
            for key, tensor in self.discriminator.state_dict().items():
                ctx.state[STATE_PREFIX + key] = tensor


def dann(weight: float = 1.0, hidden: int = 256, lambda_max: float = 1.0, gamma: float = 10.0,
         lr_scale: float = 1.0) -> DANN:
    """DANN: a domain discriminator behind a gradient-reversal layer.

    Raises:
        ConfigError: for a negative ``domain_adaptation.weight``/``lambda_max``, or a
            non-positive ``hidden``, ``gamma`` or ``lr_scale``.
    """
    return DANN(check_float("weight", weight, minimum=0.0), check_int("hidden", hidden, minimum=1),
                check_float("lambda_max", lambda_max, minimum=0.0),
                check_float("gamma", gamma, minimum=0.0, exclusive=True),
                check_float("lr_scale", lr_scale, minimum=0.0, exclusive=True))


@medxfer.hookimpl
def medxfer_register_domain_adaptation(register):
    """Register ``dann``."""
    register("dann", dann, description="DANN: domain discriminator behind a gradient-reversal "
                                       "layer, lambda ramped up")
