"""The network the core builds for a task: a registered backbone plus a task head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medxfer.models.backbone import Backbone


class TransferNetwork(nn.Module):
    """Backbone followed by a head the core builds for the task.

    Args:
        backbone: The feature extractor.
        out_features: Number of classes (classification) or targets (regression).
        dropout: Dropout before the last layer.
        hidden: Width of an optional hidden layer, or the widths of several (each a
            linear layer and a ReLU).
    """

    def __init__(self, backbone: Backbone, out_features: int, *, dropout: float = 0.0,
                 hidden: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        layers: list[nn.Module] = []
        width = backbone.feature_dim
        widths = [hidden] if isinstance(hidden, int) else list(hidden or [])
        for size in widths:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, out_features))
        self.head = nn.Sequential(*layers)
        self.out_features = out_features
        self.tta_axes: list[int] = []

    def layer_groups(self) -> list[nn.Module]:
        """Backbone layer groups (input to output) followed by the head."""
        return self.backbone.layer_groups() + [self.head]

    def compile_submodules(self, mode: str | None = None) -> None:
        """``torch.compile`` the backbone and the head (``train.compile``) in ``mode``
        (None: torch's default): submodules, because the trainer calls
        :meth:`forward_features`, not ``forward``."""
        self.backbone.compile(mode=mode)
        self.head.compile(mode=mode)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(outputs, pooled_features)``."""
        features = self.backbone(x)
        return self.head(features), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Task outputs (logits for classification).

        With ``tta_axes`` set (``eval.tta: flip``) and the network in eval mode, the outputs
        for the image and its flips along every combination of those spatial axes are
        averaged: class probabilities for classification (returned as their log, so that
        a softmax gives the average back), values for regression. Training, which calls
        :meth:`forward_features`, is unaffected.
        """
        if self.training or not self.tta_axes:
            return self.forward_features(x)[0]
        outputs = [self.forward_features(v)[0] for v in flip_variants(x, self.tta_axes)]
        return average_outputs(outputs, self.out_features)


def average_outputs(outputs: list[torch.Tensor], out_features: int) -> torch.Tensor:
    """The average of several task outputs for the same inputs, as task outputs.

    Regression outputs (``out_features == 1``) are averaged; classification logits are
    turned into class probabilities, averaged, and returned as their log, so that a softmax
    gives the average probabilities back. Computed in float32.
    """
    stacked = torch.stack([o.float() for o in outputs])
    if out_features == 1:
        return stacked.mean(0)
    return stacked.softmax(dim=2).mean(0).clamp_min(1e-12).log()


def flip_variants(x: torch.Tensor, axes: list[int]) -> list[torch.Tensor]:
    """``x`` ``[B, C, *spatial]`` and its flips along every non-empty combination of the
    spatial ``axes`` (``2 ** len(axes)`` tensors, ``x`` first)."""
    variants = [x]
    for axis in axes:
        variants += [v.flip(axis + 2) for v in variants]
    return variants


def build_network(backbone: Backbone, out_features: int, *, dropout: float = 0.0,
                  hidden: int | Sequence[int] | None = None) -> TransferNetwork:
    """Build the task network on top of ``backbone``."""
    return TransferNetwork(backbone, out_features, dropout=dropout, hidden=hidden)
