"""Domain-specific batch normalisation (Chang et al., CVPR 2019).

Every batch-norm layer is split into one layer per domain (``source``, ``target``), each
with its own running statistics and affine parameters, initialised from the original
(pretrained) layer; all other weights are shared. The trainer sets the network's domain
before each source and target forward pass (:mod:`medxfer.models.domain`), and the final
evaluation sets it per test split, so a batch is always normalised with its own domain's
layer, in training and at test time.

Works for 1D, 2D and 3D batch norm, in classifier backbones and in segmentation networks
(``scope: backbone`` splits only the encoder's layers; ``all``, the default, every layer
of the network). The target layers learn from the target batches only through whatever
loss reaches them: with unlabelled targets that is their batch statistics (updated by
every target forward pass in training mode) plus any gradient of other terms, which
is the unsupervised DSBN of the paper's first stage.
"""

from __future__ import annotations

import medxfer
from medxfer.api import ConfigError, DomainAdaptation, FitContext
from medxfer_plugins.domain_adaptation._common import SCOPES, option_error


class DomainSpecificBatchNorm(DomainAdaptation):
    """Split every batch-norm layer into a source and a target layer.

    Args:
        scope: ``all`` (every batch norm of the network) or ``backbone`` (the backbone or
            segmentation encoder only).
    """

    name = "dsbn"

    def __init__(self, scope: str) -> None:
        super().__init__(scope=scope)
        self.scope = scope
        self.replaced = 0

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx: FitContext) -> None:
        """Split the batch-norm layers (before the optimizer collects parameters).

        Raises:
            ConfigError: when the network has no batch-norm layer to split.
        """
        from medxfer_plugins.domain_adaptation._norms import norm_scope, split_batch_norms

        self.replaced = split_batch_norms(norm_scope(ctx.model, self.scope), share_affine=False)
        if self.replaced == 0 and not any(
                hasattr(m, "set_domain") for m in ctx.model.modules()):
            raise ConfigError(
                f"domain_adaptation: dsbn needs batch-norm layers, but model.backbone "
                f"{ctx.config.model.backbone.name!r} (scope {self.scope!r}) has none (instance "
                "or group norm keeps no statistics); choose a backbone with BatchNorm, e.g. "
                "basic_cnn, mobilenet_v2 or resnet18 (segmentation: an smp network), or use "
                "coral, mmd or dann")

    def restore_structure(self, model) -> None:  # noqa: ANN001 - an nn.Module
        """Split the batch norms of a freshly built network, so a saved model loads."""
        from medxfer_plugins.domain_adaptation._norms import norm_scope, split_batch_norms

        split_batch_norms(norm_scope(model, self.scope), share_affine=False)

    @medxfer.hookimpl
    def medxfer_epoch_end(self, ctx: FitContext, epoch: int, metrics: dict[str, float]) -> None:
        """Log how many layers are domain-specific."""
        metrics["dsbn_layers"] = float(self.replaced)


def dsbn(scope: str = "all") -> DomainSpecificBatchNorm:
    """Domain-specific batch normalisation: per-domain statistics and affine parameters.

    Raises:
        ConfigError: when ``domain_adaptation.scope`` is not ``all`` or ``backbone``.
    """
    if scope not in SCOPES:
        raise option_error("scope", f"expected one of {', '.join(SCOPES)}, got {scope!r}")
    return DomainSpecificBatchNorm(scope)


@medxfer.hookimpl
def medxfer_register_domain_adaptation(register):
    """Register ``dsbn``."""
    register("dsbn", dsbn, description="domain-specific batch norm: separate statistics and "
                                       "affine parameters per domain (DSBN)")
