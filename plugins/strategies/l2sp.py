"""L2-SP (Li, Grandvalet & Davoine, ICML 2018): fine-tune everything, but pull the
backbone's weights towards their pretrained values instead of towards zero.

The regulariser of the paper is
``Omega(w) = alpha/2 * ||w_S - w0_S||^2 + beta/2 * ||w_new||^2``,
with ``w_S`` the backbone's (shared) parameters, ``w0_S`` their pretrained values and
``w_new`` the new head's. Here:

* the retention term ``0.5 * sum ||w - w0||^2`` over the trainable backbone parameters
  (batch-norm affine parameters included) is returned as
  ``LossTerm("l2sp", value, role="retention")``; the trainer scales it by
  ``loss.alpha`` (the paper's alpha), so this plugin applies no weight of its own;
* ``head_decay`` (the paper's beta; 0 = off) adds ``0.5 * ||w_head||^2`` over every head
  parameter as ``LossTerm("l2sp_head", value, role="auxiliary", weight=head_decay)``.

The pretrained weights are snapshotted in ``medxfer_fit_start`` into
``ctx.state["l2sp.reference"]`` (on the model's device, outside the model, so it is not
checkpointed). On resume ``medxfer_fit_start`` runs before the checkpoint is restored, so
the snapshot is again of the pretrained weights.

Weight decay: L2-SP replaces weight decay (which pulls towards zero, i.e. away from the
pretrained solution), so the backbone's parameter group gets ``weight_decay = 0`` unless
``keep_weight_decay`` is true; the head keeps the optimizer's weight decay unless
``head_decay`` replaces it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import medxfer
from medxfer.api import FitContext, LossTerm, Strategy
from medxfer_plugins.strategies._common import check_bool, check_float

if TYPE_CHECKING:  # pragma: no cover
    import torch

REFERENCE_KEY = "l2sp.reference"


def squared_distance(params: dict[str, torch.Tensor],
                     reference: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """``sum ||p - reference[name]||^2`` over the trainable ``params`` that have a reference."""
    total: torch.Tensor | None = None
    for name, param in params.items():
        ref = reference.get(name)
        if ref is None or not param.requires_grad:
            continue
        term = (param - ref).pow(2).sum()
        total = term if total is None else total + term
    return total


class L2SP(Strategy):
    """Penalise the distance of the backbone's weights to the pretrained ones.

    Args:
        head_decay: Weight of ``0.5 * ||w_head||^2`` (the paper's beta); 0 turns it off.
        keep_weight_decay: Keep the optimizer's weight decay on the backbone too.
    """

    name = "l2sp"
    keeps_pretrained = True

    def __init__(self, head_decay: float, keep_weight_decay: bool) -> None:
        super().__init__(head_decay=head_decay, keep_weight_decay=keep_weight_decay)
        self.head_decay = head_decay
        self.keep_weight_decay = keep_weight_decay

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx: FitContext) -> None:
        """Snapshot the pretrained backbone weights into ``ctx.state``."""
        ctx.state[REFERENCE_KEY] = {
            name: param.detach().clone() for name, param in ctx.model.backbone.named_parameters()
        }

    @medxfer.hookimpl
    def medxfer_parameter_groups(self, ctx: FitContext,
                                 base_lr: float) -> list[dict[str, Any]] | None:
        """Backbone without weight decay (L2-SP replaces it), head as configured."""
        if self.keep_weight_decay and self.head_decay == 0:
            return None
        groups: list[dict[str, Any]] = []
        backbone = medxfer.parameter_group(ctx.model.backbone, lr=base_lr, name="backbone")
        if backbone is not None:
            if not self.keep_weight_decay:
                backbone["weight_decay"] = 0.0
            groups.append(backbone)
        head = medxfer.parameter_group(ctx.model.head, lr=base_lr, name="head")
        if head is not None:
            if self.head_decay > 0:
                head["weight_decay"] = 0.0
            groups.append(head)
        rest = medxfer.ungrouped_trainable_parameters(ctx.model, groups)
        if rest:
            groups.append({"params": rest, "lr": float(base_lr), "name": "other"})
        return groups

    @medxfer.hookimpl
    def medxfer_extra_loss_terms(self, ctx: FitContext) -> list[LossTerm]:
        """The L2-SP retention term, and the head's L2 term when ``head_decay`` is set."""
        import torch

        reference = ctx.state.get(REFERENCE_KEY)
        if reference is None:
            raise RuntimeError("l2sp: medxfer_fit_start was not called before training")
        backbone = dict(ctx.model.backbone.named_parameters())
        distance = squared_distance(backbone, reference)
        if distance is None:  # nothing in the backbone trains
            distance = torch.zeros((), device=ctx.device)
        terms = [LossTerm("l2sp", 0.5 * distance, role="retention")]
        if self.head_decay > 0:
            head = [p for p in ctx.model.head.parameters() if p.requires_grad]
            norm = sum((p.pow(2).sum() for p in head), torch.zeros((), device=ctx.device))
            terms.append(LossTerm("l2sp_head", 0.5 * norm, role="auxiliary",
                                  weight=self.head_decay))
        return terms

    @medxfer.hookimpl
    def medxfer_fit_end(self, ctx: FitContext) -> None:
        """Free the snapshot."""
        ctx.state.pop(REFERENCE_KEY, None)


def l2sp(head_decay: float = 0.0, keep_weight_decay: bool = False) -> L2SP:
    """L2-SP: a retention term ``0.5 * ||w - w0||^2`` towards the pretrained backbone weights
    (scaled by ``loss.alpha``); ``head_decay`` adds an L2 term on the head.

    Raises:
        ConfigError: when ``strategy.head_decay`` is negative or not a number, or
            ``strategy.keep_weight_decay`` is not a bool.
    """
    return L2SP(check_float("head_decay", head_decay, minimum=0.0),
                check_bool("keep_weight_decay", keep_weight_decay))


@medxfer.hookimpl
def medxfer_register_strategies(register):
    """Register ``l2sp``."""
    register("l2sp", l2sp,
             description="fine-tune with an L2 penalty towards the pretrained weights (L2-SP)")
