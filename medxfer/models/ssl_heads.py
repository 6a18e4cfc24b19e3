"""The heads self-supervised pretraining puts on a backbone, dropped once it is done.

A contrastive method maps pooled features to a small embedding
(:class:`ProjectionHead`, SimCLR's two-layer MLP); a restoration method decodes the
pooled features back into an image of the input's size (:class:`RestorationDecoder`).
The decoder starts from the pooled features alone, with no skip connections, so the
image has to pass through the backbone's features, the ones a classifier later uses.
:class:`SSLNetwork` keeps the backbone under ``backbone.`` so that its checkpoint is a
transfer source like any run's (``backbone.body.*``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medxfer.models.backbone import Backbone


class ProjectionHead(nn.Sequential):
    """``Linear -> ReLU -> Linear``: pooled features to the embedding the loss compares."""

    def __init__(self, feature_dim: int, hidden: int = 512, out: int = 128) -> None:
        super().__init__(nn.Linear(feature_dim, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


class RestorationDecoder(nn.Module):
    """Pooled features ``[N, F]`` to an image ``[N, C, *size]``.

    A linear map to a ``4^d`` grid of ``channels`` maps, then upsampling blocks (nearest x2,
    3-wide convolution, group norm, ReLU) until the grid covers ``size``, a 1-wide
    convolution to ``out_channels`` and a resize to ``size`` exactly.

    Args:
        feature_dim: ``F``.
        out_channels: ``C``.
        size: The image size (2 or 3 sides).
        channels: Width of the first grid; halved by each block down to 16.
    """

    def __init__(self, feature_dim: int, out_channels: int, size: Sequence[int],
                 channels: int = 64) -> None:
        super().__init__()
        self.size = [int(s) for s in size]
        dims = len(self.size)
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.grid = 4
        self.channels = channels
        self.expand = nn.Sequential(nn.Linear(feature_dim, 256), nn.ReLU(inplace=True),
                                    nn.Linear(256, channels * self.grid ** dims))
        blocks: list[nn.Module] = []
        width, side = channels, self.grid
        for _ in range(max(0, math.ceil(math.log2(max(self.size) / self.grid)))):
            nxt = max(16, width // 2)
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"),
                       conv(width, nxt, 3, padding=1), nn.GroupNorm(min(8, nxt), nxt),
                       nn.ReLU(inplace=True)]
            width, side = nxt, side * 2
        blocks.append(conv(width, out_channels, 1))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        dims = len(self.size)
        x = self.expand(features).view(features.shape[0], self.channels, *[self.grid] * dims)
        x = self.blocks(x)
        mode = "trilinear" if dims == 3 else "bilinear"
        return F.interpolate(x, size=self.size, mode=mode, align_corners=False)


class SSLNetwork(nn.Module):
    """A backbone with a self-supervised head: ``forward(x) -> head(backbone(x))``."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
