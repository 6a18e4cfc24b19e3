"""Training from scratch: the random-initialisation baseline every transfer result is
compared against.

The strategy sets ``uses_pretrained = False``, so the core builds the backbone without
pretrained weights. As a safeguard, if the backbone nevertheless reports loaded weights
(``backbone.load_report`` is not ``None``), ``medxfer_fit_start`` re-initialises it with
each layer's own ``reset_parameters()`` (PyTorch's default initialisation, which may
differ from an architecture's custom one) and warns.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import medxfer
from medxfer.api import FitContext, Strategy, backbone_name

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


def reinitialize(module: nn.Module) -> list[str]:
    """Reset every layer of ``module`` that has ``reset_parameters()``.

    Batch-norm layers reset their running statistics too.

    Returns:
        Names of parameters that no layer could reset (left as they were).
    """
    import torch

    reset: set[int] = set()
    with torch.no_grad():
        for layer in module.modules():
            reset_fn = getattr(layer, "reset_parameters", None)
            if callable(reset_fn):
                reset_fn()
                reset.update(id(p) for p in layer.parameters(recurse=False))
    return [name for name, p in module.named_parameters() if id(p) not in reset]


class Scratch(Strategy):
    """Every parameter trains, from random initialisation."""

    name = "scratch"
    uses_pretrained = False

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx: FitContext) -> None:
        """Make everything trainable; re-initialise a backbone that loaded weights."""
        medxfer.unfreeze(ctx.model)
        backbone = ctx.model.backbone
        if backbone.load_report is None:
            return
        source = backbone.load_report.source
        left = reinitialize(backbone)
        backbone.load_report = None
        ctx.state["scratch.reinitialized_from"] = source
        note = (f"; {len(left)} parameter(s) could not be reset: {', '.join(left[:5])}"
                if left else "")
        warnings.warn(
            f"strategy 'scratch': backbone {backbone_name(ctx)!r} was built with pretrained "
            f"weights ({source}); re-initialised it at random{note}",
            UserWarning, stacklevel=2,
        )


def scratch() -> Scratch:
    """Random-initialisation baseline: no pretrained weights, every layer trains."""
    return Scratch()


@medxfer.hookimpl
def medxfer_register_strategies(register):
    """Register ``scratch``."""
    register("scratch", scratch,
             description="random-initialisation baseline: no pretrained weights, all layers train")
