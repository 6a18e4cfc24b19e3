"""Helpers for registering backbone factories, importable without torch."""

from __future__ import annotations

import functools
from typing import Any, Callable


def torchvision_variant(build: Callable[..., Any], variant: str) -> Callable[..., Any]:
    """A registry factory for one torchvision variant of a family builder.

    ``build(variant, *, in_channels, spatial_dims, pretrained, weights)`` gets the
    defaults shared by every torchvision backbone (RGB 2D input, ImageNet weights set
    ``IMAGENET1K_V1``); the core and the config override them by keyword.
    """
    return functools.partial(build, variant, in_channels=3, spatial_dims=2,
                             pretrained="imagenet", weights="IMAGENET1K_V1")
