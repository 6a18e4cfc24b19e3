"""What the trainer shares with lifecycle hook implementations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from medxfer.config import RunConfig
    from medxfer.models.network import TransferNetwork


@dataclass
class LossTerm:
    """An extra loss term returned by ``medxfer_extra_loss_terms``.

    Attributes:
        name: Name it is logged under (e.g. ``l2sp``, ``lwf``, ``coral``).
        value: A scalar tensor.
        role: ``"retention"`` for the knowledge-retention term ``L_pre`` of the combined
            loss (scaled by ``loss.alpha``); ``"auxiliary"`` for any other term (scaled by
            ``weight``).
        weight: Scale of an auxiliary term.
    """

    name: str
    value: torch.Tensor
    role: Literal["retention", "auxiliary"] = "auxiliary"
    weight: float = 1.0


@dataclass
class FitContext:
    """The state of one training run, passed to every lifecycle hook.

    Attributes:
        config: The resolved run config.
        model: The network being trained (a :class:`medxfer.models.TransferNetwork`).
        device: Where the model lives.
        max_epochs: Number of epochs configured.
        optimizer: The optimizer; ``None`` during ``medxfer_fit_start``.
        epoch: The current zero-based epoch.
        step: The global step.
        run_dir: The run's output folder.
        state: Free space for plugins (e.g. a snapshot of the pretrained weights); keep
            keys prefixed with the plugin's name.
        target_loader: Unlabelled target-domain data loader, when the run has one.
        train_loader: The labelled (source) training loader.
        base_lr: The configured learning rate.
        total_steps: Training steps of the whole run (known once ``fit`` starts), e.g. for
            DANN's ramp-up of the gradient-reversal weight.
    """

    config: RunConfig
    model: TransferNetwork
    device: torch.device
    max_epochs: int
    optimizer: torch.optim.Optimizer | None = None
    epoch: int = 0
    step: int = 0
    run_dir: Any = None
    state: dict[str, Any] = field(default_factory=dict)
    target_loader: Any = None
    train_loader: Any = None
    base_lr: float = 0.0
    total_steps: int = 0

    def add_param_group(self, params: list[torch.nn.Parameter], *, lr: float | None = None,
                        name: str | None = None) -> None:
        """Add parameters to the live optimizer (e.g. a newly unfrozen layer group).

        Parameters already in the optimizer are skipped. The learning-rate scheduler's
        base learning rates are extended accordingly by the trainer.
        """
        if self.optimizer is None:
            raise RuntimeError("add_param_group called before the optimizer exists")
        known = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        fresh = [p for p in params if id(p) not in known]
        if not fresh:
            return
        group: dict[str, Any] = {"params": fresh, "lr": self.base_lr if lr is None else lr}
        if name:
            group["name"] = name
        self.optimizer.add_param_group(group)
        self.state.setdefault("_new_param_groups", []).append(len(self.optimizer.param_groups) - 1)
