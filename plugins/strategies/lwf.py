"""Learning without Forgetting (Li & Hoiem, 2016): fine-tune everything while a
distillation term keeps the network's responses close to those of the frozen pretrained
network on the new data.

LwF distils the *outputs of the source task*. medxfer's backbones come without their
source classifier (it is dropped when the weights are loaded), so by default this plugin
distils the pretrained backbone's **pooled features** instead: the retention term is the
mean squared error between the current backbone's features and those of a frozen copy of
the pretrained backbone, on the same images. When the caller supplies the source head
(``source_head``, an ``nn.Module`` mapping pooled features to source logits; programmatic
use only, since a config cannot hold a module), the term is LwF's own: the KL divergence
between the softened source predictions of the frozen and the current network,
``T^2 * KL(softmax(z_old / T) || softmax(z_new / T))`` with temperature ``T``; the source
head itself stays frozen.

Either way it is returned as ``LossTerm("lwf", value, role="retention")`` and scaled by
``loss.alpha`` in the trainer.

The frozen copy lives in ``ctx.state["lwf.teacher"]``, not as a submodule: it is not
trained, not saved in checkpoints and not switched by ``model.train()``. It is always in
evaluation mode, so at the very first step the term is zero only if the student runs in
evaluation mode too (batch-norm in training mode normalises with batch statistics).
Cost: one extra forward pass of the backbone per step, without gradients.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import medxfer
from medxfer.api import FitContext, LossTerm, Strategy
from medxfer_plugins.strategies._common import check_float, option_error

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

TEACHER_KEY = "lwf.teacher"
SOURCE_HEAD_KEY = "lwf.source_head"


def frozen_copy(module: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy of ``module`` on ``device``, in evaluation mode, without gradients."""
    clone = copy.deepcopy(module).to(device)
    clone.eval()
    for param in clone.parameters():
        param.requires_grad_(False)
    return clone


def distillation_kl(new_logits: torch.Tensor, old_logits: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(old/T) || softmax(new/T))``, averaged over the batch."""
    import torch.nn.functional as F

    log_new = F.log_softmax(new_logits.float() / temperature, dim=1)
    log_old = F.log_softmax(old_logits.float() / temperature, dim=1)
    return F.kl_div(log_new, log_old, reduction="batchmean", log_target=True) * temperature**2


class LearningWithoutForgetting(Strategy):
    """Distil the frozen pretrained network into the one being fine-tuned.

    Args:
        temperature: Softening temperature of the logit distillation (with a source head).
        source_head: Optional module mapping pooled features to the source task's logits.
    """

    name = "lwf"
    keeps_pretrained = True

    def __init__(self, temperature: float, source_head: nn.Module | None) -> None:
        super().__init__(temperature=temperature)
        self.temperature = temperature
        self.source_head = source_head

    def describe(self) -> dict[str, Any]:
        """Name, options, and what is distilled."""
        return {"name": self.name, "temperature": self.temperature,
                "distils": "source_logits" if self.source_head is not None else "features"}

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx: FitContext) -> None:
        """Keep a frozen copy of the pretrained backbone (and source head) in ``ctx.state``."""
        ctx.state[TEACHER_KEY] = frozen_copy(ctx.model.backbone, ctx.device)
        if self.source_head is not None:
            ctx.state[SOURCE_HEAD_KEY] = frozen_copy(self.source_head, ctx.device)

    @medxfer.hookimpl
    def medxfer_extra_loss_terms(self, ctx: FitContext, batch: dict[str, Any],
                                 features: torch.Tensor) -> list[LossTerm]:
        """The distillation term between the current and the frozen pretrained network."""
        import torch
        import torch.nn.functional as F

        teacher = ctx.state.get(TEACHER_KEY)
        if teacher is None:
            raise RuntimeError("lwf: medxfer_fit_start was not called before training")
        images = batch["image"].to(features.device, non_blocking=True)
        with torch.no_grad():
            old_features = teacher(images)
        head = ctx.state.get(SOURCE_HEAD_KEY)
        if head is None:
            value = F.mse_loss(features.float(), old_features.float())
        else:
            with torch.no_grad():
                old_logits = head(old_features)
            value = distillation_kl(head(features), old_logits, self.temperature)
        return [LossTerm("lwf", value, role="retention")]

    def _release(self, ctx: FitContext) -> None:
        ctx.state.pop(TEACHER_KEY, None)
        ctx.state.pop(SOURCE_HEAD_KEY, None)

    @medxfer.hookimpl
    def medxfer_fit_end(self, ctx: FitContext) -> None:
        """Free the frozen copy."""
        self._release(ctx)

    @medxfer.hookimpl
    def medxfer_on_exception(self, ctx: FitContext) -> None:
        """Free the frozen copy."""
        self._release(ctx)


def lwf(temperature: float = 2.0,
        source_head: nn.Module | None = None) -> LearningWithoutForgetting:
    """Learning without Forgetting: distil the frozen pretrained backbone's features (or, with
    a ``source_head``, its softened source logits) while fine-tuning.

    Raises:
        ConfigError: when ``strategy.temperature`` is not a positive number or
            ``strategy.source_head`` is not a module.
    """
    from torch import nn

    temperature = check_float("temperature", temperature, minimum=0.0, exclusive=True)
    if source_head is not None and not isinstance(source_head, nn.Module):
        raise option_error("source_head", "must be a torch module (set it from Python, "
                           f"not from a config); got {type(source_head).__name__}")
    return LearningWithoutForgetting(temperature, source_head)


@medxfer.hookimpl
def medxfer_register_strategies(register):
    """Register ``lwf``."""
    register("lwf", lwf,
             description="Learning without Forgetting: distil the frozen pretrained backbone")
