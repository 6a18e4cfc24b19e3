"""The backbone contract every backbone plugin returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn


@dataclass
class LoadReport:
    """What a pretrained-weights load actually did.

    Attributes:
        source: Where the weights came from (``imagenet:<file>``, a path, a run folder).
        loaded: Number of tensors copied into the model.
        expected: Number of tensors the load was expected to fill.
        skipped: Names of tensors deliberately left out (e.g. the source's classifier).
        sha256: Hash of the weights file, when it was checked.
    """

    source: str
    loaded: int
    expected: int
    skipped: list[str] = field(default_factory=list)
    sha256: str | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form for ``metrics.json`` and checkpoint sidecars."""
        return {"source": self.source, "loaded": self.loaded, "expected": self.expected,
                "skipped": list(self.skipped), "sha256": self.sha256}


class Backbone(nn.Module):
    """A feature extractor with its feature width and ordered layer groups.

    Args:
        body: Module mapping an image batch ``[N, C, *spatial]`` to a feature map
            ``[N, F, *spatial']`` (or already-pooled features ``[N, F]``).
        groups: The body's layer groups in order from input to output; every trainable
            parameter of ``body`` belongs to exactly one group. Strategies freeze, unfreeze
            and set learning rates group by group.
        feature_dim: ``F``, the width of the pooled features.
        spatial_dims: 2 or 3.
        in_channels: Channels the body takes.
        expects_imagenet_norm: Whether inputs should be normalised with ImageNet mean/std
            (true for ImageNet-pretrained weights).
        load_report: What loading pretrained weights did, or ``None`` for random init.
    """

    def __init__(self, body: nn.Module, groups: Sequence[nn.Module], feature_dim: int, *,
                 spatial_dims: int, in_channels: int, expects_imagenet_norm: bool = False,
                 load_report: LoadReport | None = None) -> None:
        super().__init__()
        self.body = body
        self.feature_dim = int(feature_dim)
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.expects_imagenet_norm = expects_imagenet_norm
        self.load_report = load_report
        self._groups = list(groups)

    def layer_groups(self) -> list[nn.Module]:
        """The layer groups, input to output."""
        return list(self._groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[N, feature_dim]``."""
        out = self.body(x)
        if out.ndim > 2:
            out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1) if out.ndim == 4
                                else nn.functional.adaptive_avg_pool3d(out, 1), 1)
        return out
