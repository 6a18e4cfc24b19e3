"""Feature extraction: the pretrained backbone is frozen, only the new head trains.

The backbone's batch-norm layers are frozen too: they normalise with, and keep, the
pretrained running statistics (see :mod:`medxfer.training.freezing`).
"""

from __future__ import annotations

import medxfer
from medxfer.api import FitContext, Strategy


class FeatureExtraction(Strategy):
    """Freeze the whole backbone, statistics included; train the head only."""

    name = "feature_extraction"
    freezes_backbone = True
    keeps_pretrained = True

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx: FitContext) -> None:
        """Freeze every backbone parameter and lock its normalisation statistics."""
        medxfer.freeze(ctx.model.backbone, train_bn=False)


def feature_extraction() -> FeatureExtraction:
    """Freeze the pretrained backbone (batch-norm statistics included); train only the head."""
    return FeatureExtraction()


@medxfer.hookimpl
def medxfer_register_strategies(register):
    """Register ``feature_extraction``."""
    register("feature_extraction", feature_extraction,
             description="freeze the pretrained backbone (BN statistics too); train only the head")
