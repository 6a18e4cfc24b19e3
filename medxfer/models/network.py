"""The network the core builds for a task: a registered backbone plus a task head."""

from __future__ import annotations

import torch
from torch import nn

from medxfer.models.backbone import Backbone


class TransferNetwork(nn.Module):
    """Backbone followed by a head the core builds for the task.

    Args:
        backbone: The feature extractor.
        out_features: Number of classes (classification) or targets (regression).
        dropout: Dropout before the last layer.
        hidden: Width of an optional hidden layer.
    """

    def __init__(self, backbone: Backbone, out_features: int, *, dropout: float = 0.0,
                 hidden: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        layers: list[nn.Module] = []
        width = backbone.feature_dim
        if hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, out_features))
        self.head = nn.Sequential(*layers)
        self.out_features = out_features

    def layer_groups(self) -> list[nn.Module]:
        """Backbone layer groups (input to output) followed by the head."""
        return self.backbone.layer_groups() + [self.head]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(outputs, pooled_features)``."""
        features = self.backbone(x)
        return self.head(features), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Task outputs (logits for classification)."""
        return self.forward_features(x)[0]


def build_network(backbone: Backbone, out_features: int, *, dropout: float = 0.0,
                  hidden: int | None = None) -> TransferNetwork:
    """Build the task network on top of ``backbone``."""
    return TransferNetwork(backbone, out_features, dropout=dropout, hidden=hidden)
