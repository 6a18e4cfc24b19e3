"""Tiny networks and a reference training loop for the strategy tests.

The loop calls the lifecycle hooks in the trainer's order (see the strategy contract):
fit start, parameter groups, then per epoch ``model.train()``, epoch start, per step
forward / extra loss terms / backward / after backward / optimizer step, epoch end, and
finally fit end.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medxfer.config import RunConfig
from medxfer.training.context import FitContext
from medxfer.models import Backbone, LoadReport, TransferNetwork
from medxfer.plugins import create_plugin_manager

NUM_CLASSES = 3


def tiny_backbone(spatial_dims: int, *, pretrained: bool = True) -> Backbone:
    """A 3-group conv net (conv-BN-ReLU per group) in 2D or 3D."""
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
    widths = [1, 4, 6, 8]
    groups = [nn.Sequential(conv(widths[i], widths[i + 1], 3, stride=1 if i == 0 else 2,
                                 padding=1, bias=False),
                            norm(widths[i + 1]), nn.ReLU())
              for i in range(3)]
    report = LoadReport("test:fake", loaded=9, expected=9) if pretrained else None
    return Backbone(nn.Sequential(*groups), groups, feature_dim=widths[-1],
                    spatial_dims=spatial_dims, in_channels=1, load_report=report)


def tiny_network(spatial_dims: int, *, seed: int = 0) -> TransferNetwork:
    """The tiny backbone plus a linear head, deterministic for ``seed``."""
    torch.manual_seed(seed)
    return TransferNetwork(tiny_backbone(spatial_dims), NUM_CLASSES)


def tiny_batches(spatial_dims: int, count: int = 2, *, seed: int = 1) -> list[dict[str, Any]]:
    """``count`` labelled batches of 4 images (8x8 in 2D, 6x6x6 in 3D)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (4, 1, 8, 8) if spatial_dims == 2 else (4, 1, 6, 6, 6)
    return [{"image": torch.randn(shape, generator=gen) * 2 + 1,
             "label": torch.randint(0, NUM_CLASSES, (4,), generator=gen)}
            for _ in range(count)]


class ReferenceLoop:
    """A minimal trainer: one strategy on a run-local plugin manager, hooks in order."""

    def __init__(self, model: TransferNetwork, strategy: object, spatial_dims: int, *,
                 lr: float = 0.05, epochs: int = 3) -> None:
        self.model, self.strategy, self.lr = model, strategy, lr
        self.manager = create_plugin_manager(load_entry_points=False)
        self.manager.register(strategy, name="strategy")
        self.hook = self.manager.hook
        self.ctx = FitContext(config=RunConfig(), model=model, device=torch.device("cpu"),
                              max_epochs=epochs, base_lr=lr)
        self.batches = tiny_batches(spatial_dims)
        self.terms: list[dict[str, float]] = []

    def start(self, epoch: int = 0) -> FitContext:
        """Fit start, parameter groups, optimizer (``epoch`` > 0: resuming before it)."""
        self.hook.medxfer_fit_start(ctx=self.ctx)
        self.ctx.epoch = epoch
        groups = self.hook.medxfer_parameter_groups(ctx=self.ctx, base_lr=self.lr)
        if groups is None:
            groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        self.ctx.optimizer = torch.optim.SGD(groups, lr=self.lr, momentum=0.9)
        return self.ctx

    def epoch(self, epoch: int) -> dict[str, float]:
        """One epoch over the tiny batches; returns the epoch's metrics."""
        ctx, cfg = self.ctx, self.ctx.config.loss
        ctx.epoch = epoch
        self.model.train()
        self.hook.medxfer_epoch_start(ctx=ctx, epoch=epoch)
        for batch in self.batches:
            outputs, features = self.model.forward_features(batch["image"])
            loss_new = F.cross_entropy(outputs, batch["label"])
            results = self.hook.medxfer_extra_loss_terms(
                ctx=ctx, batch=batch, outputs=outputs, features=features,
                target_batch=None, target_features=None, target_outputs=None)
            terms = [t for result in results for t in (result or [])]
            retention = sum((t.value for t in terms if t.role == "retention"),
                            torch.zeros(()))
            other = sum((t.weight * t.value for t in terms if t.role != "retention"),
                        torch.zeros(()))
            loss = cfg.beta * loss_new + cfg.alpha * retention + other
            self.terms.append({t.name: float(t.value.detach()) for t in terms})
            ctx.optimizer.zero_grad()
            loss.backward()
            self.hook.medxfer_after_backward(ctx=ctx, step=ctx.step)
            ctx.optimizer.step()
            ctx.step += 1
        metrics = {"loss": float(loss.detach())}
        self.hook.medxfer_epoch_end(ctx=ctx, epoch=epoch, metrics=metrics)
        return metrics

    def fit(self, epochs: int = 3) -> FitContext:
        """Start, ``epochs`` epochs, fit end."""
        self.start()
        for epoch in range(epochs):
            self.epoch(epoch)
        self.hook.medxfer_fit_end(ctx=self.ctx)
        return self.ctx


@pytest.fixture
def make_network() -> Callable[..., TransferNetwork]:
    """Factory of tiny 2D/3D transfer networks."""
    return tiny_network


@pytest.fixture
def make_batches() -> Callable[..., list[dict[str, Any]]]:
    """Factory of tiny labelled batches."""
    return tiny_batches


@pytest.fixture
def make_loop() -> Callable[..., ReferenceLoop]:
    """Factory of reference training loops."""
    return ReferenceLoop
