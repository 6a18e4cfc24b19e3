"""AdaBN (Li et al., Pattern Recognition 2018): adaptive batch normalisation.

Training is the source-only training. Once it ends (``medxfer_fit_end``, on the selected
model), every batch-norm layer gets a second set of running statistics, computed on the
target training data without labels, and shares the source layer's affine parameters.
Nothing else changes: weights, biases and the source statistics stay as trained. The
network then normalises target data (domain ``target``) with target statistics and
source data with the source statistics (see :mod:`medxfer.models.domain`).

The trainer draws no target batches during training for this method
(``draws_target_batches = False``); the target loader is read only after training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import medxfer
from medxfer.api import ConfigError, DomainAdaptation, FitContext
from medxfer_plugins.domain_adaptation._common import SCOPES, check_int, option_error

if TYPE_CHECKING:  # pragma: no cover
    import torch


def recompute_target_statistics(model: torch.nn.Module, batches, *, device: torch.device,
                                passes: int = 1) -> int:
    """Reset the target statistics of every :class:`DomainBatchNorm` of ``model`` and
    recompute them as the plain average over ``batches`` (no gradients, no labels).

    Only the target layers run in training mode; dropout and everything else stay in
    evaluation mode, and no parameter changes.

    Args:
        model: A network whose batch norms were split with ``share_affine=True``.
        batches: An iterable of dicts with ``image`` (re-iterated ``passes`` times).
        device: Where the model lives.
        passes: Passes over ``batches``.

    Returns:
        The number of batches seen.
    """
    import torch

    from medxfer_plugins.domain_adaptation._norms import domain_norms

    layers = [d.norms[medxfer.TARGET] for d in domain_norms(model)]
    was_training = model.training
    model.eval()
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average: every batch counts equally
        layer.train()
    seen = 0
    medxfer.set_domain(model, medxfer.TARGET)
    try:
        with torch.no_grad():
            for _ in range(passes):
                for batch in batches:
                    model(batch["image"].to(device))
                    seen += 1
    finally:
        medxfer.set_domain(model, medxfer.SOURCE)
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
    return seen


class AdaBN(DomainAdaptation):
    """Recompute batch-norm statistics on target data after training.

    Args:
        scope: ``all`` or ``backbone`` (as for ``dsbn``).
        passes: Passes over the target training data.
    """

    name = "adabn"
    draws_target_batches = False

    def __init__(self, scope: str, passes: int) -> None:
        super().__init__(scope=scope, passes=passes)
        self.scope, self.passes = scope, passes

    def restore_structure(self, model: torch.nn.Module) -> None:
        """Add the target statistics' layers to a freshly built network (saved models load)."""
        from medxfer_plugins.domain_adaptation._norms import norm_scope, split_batch_norms

        split_batch_norms(norm_scope(model, self.scope), share_affine=True)

    @medxfer.hookimpl
    def medxfer_fit_end(self, ctx: FitContext) -> None:
        """Add target statistics to every batch norm and compute them on the target data.

        Raises:
            ConfigError: without target data or batch-norm layers.
        """
        from medxfer_plugins.domain_adaptation._norms import (domain_norms, norm_scope,
                                                              split_batch_norms)

        if ctx.target_loader is None:
            raise ConfigError("domain_adaptation: adabn needs target data; set data.target.path")
        split_batch_norms(norm_scope(ctx.model, self.scope), share_affine=True)
        if not domain_norms(ctx.model):
            raise ConfigError(
                f"domain_adaptation: adabn needs batch-norm layers, but model.backbone "
                f"{ctx.config.model.backbone.name!r} has none; choose a backbone with BatchNorm")
        seen = recompute_target_statistics(ctx.model, ctx.target_loader, device=ctx.device,
                                           passes=self.passes)
        ctx.state["adabn.target_batches"] = seen


def adabn(scope: str = "all", passes: int = 1) -> AdaBN:
    """AdaBN: target batch-norm statistics computed after training, without labels.

    Raises:
        ConfigError: for a bad ``domain_adaptation.scope`` or ``passes``.
    """
    if scope not in SCOPES:
        raise option_error("scope", f"expected one of {', '.join(SCOPES)}, got {scope!r}")
    return AdaBN(scope, check_int("passes", passes, minimum=1))


@medxfer.hookimpl
def medxfer_register_domain_adaptation(register):
    """Register ``adabn``."""
    register("adabn", adabn, description="AdaBN: recompute batch-norm statistics on target "
                                         "data after training, no labels")
