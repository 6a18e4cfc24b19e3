"""What self-supervised pretraining (``medxfer pretrain --ssl``) shows the network: two
augmented views of each image (contrastive), or a corrupted image to restore (Models
Genesis).

Built from MONAI's transforms, as MONAI's own self-supervised tutorial does: the
geometric and intensity augmentation of the run's ``data.augment`` ops (on whole batches,
:class:`~medxfer.data.batch_augment.BatchAugmentation`), and per image
``RandCoarseDropout`` (cut-out, in-painting and out-painting holes), ``RandCoarseShuffle``
(local pixel shuffling) and ``RandHistogramShift`` (a random monotone intensity curve,
standing for Models Genesis' Bezier transform). Labels are never read.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from monai.transforms import RandCoarseDropout, RandCoarseShuffle, RandHistogramShift

from medxfer.data.augment import default_flip_axes
from medxfer.data.batch_augment import BatchAugmentation


def default_ssl_ops(spatial_dims: int) -> list[dict[str, Any]]:
    """Geometric and intensity ops used when the config has no ``data.augment.ops``."""
    return [{"name": "flip", "axes": default_flip_axes(spatial_dims)},
            {"name": "affine", "degrees": 15, "scale": 0.15},
            {"name": "contrast", "factor": 0.2}, {"name": "noise", "std": 0.05}]


def _sides(size: Sequence[int], low: float, high: float) -> tuple[list[int], list[int]]:
    return ([max(1, int(round(s * low))) for s in size],
            [max(1, int(round(s * high))) for s in size])


class _PerImage:
    """MONAI array transforms applied to each image of a batch ``[B, C, *spatial]`` (on
    the CPU, with their own random state)."""

    def __init__(self, transforms: Sequence[Any], seed: int) -> None:
        self.transforms = list(transforms)
        for offset, transform in enumerate(self.transforms):
            transform.set_random_state(seed=(seed + 7919 * offset) % (2 ** 31))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for image in images.detach().cpu():
            for transform in self.transforms:
                image = torch.as_tensor(np.asarray(transform(image)), dtype=torch.float32)
            out.append(image)
        return torch.stack(out).to(images.device)


def ssl_augmentation(ops: Sequence[dict[str, Any]], *, spatial_dims: int,
                     spatial_size: Sequence[int], seed: int) -> BatchAugmentation:
    """The batch augmentation of ``ops`` (:func:`default_ssl_ops` when empty)."""
    return BatchAugmentation(list(ops) or default_ssl_ops(spatial_dims),
                             spatial_dims=spatial_dims, segmentation=False,
                             spatial_size=list(spatial_size), seed=seed)


class ContrastiveViews:
    """Two random views of each image of a batch (SimCLR-style): the run's augmentation
    ops drawn twice, then a cut-out hole or two per view with probability one half.

    Args:
        ops: ``data.augment`` ops (batch forms); :func:`default_ssl_ops` when empty.
        spatial_dims: 2 or 3.
        spatial_size: The images' size.
        seed: Seed of every random draw.
    """

    def __init__(self, ops: Sequence[dict[str, Any]], *, spatial_dims: int,
                 spatial_size: Sequence[int], seed: int) -> None:
        self.augment = ssl_augmentation(ops, spatial_dims=spatial_dims,
                                        spatial_size=spatial_size, seed=seed)
        low, high = _sides(spatial_size, 0.15, 0.35)
        self.cutout = _PerImage([RandCoarseDropout(holes=1, max_holes=2, spatial_size=low,
                                                   max_spatial_size=high, fill_value=0.0,
                                                   prob=0.5)], seed)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.cutout(self.augment(images)[0])
        second = self.cutout(self.augment(images)[0])
        return first, second


class GenesisCorruption:
    """Models Genesis' corruptions (Zhou et al., MedIA 2021) of each image, to be restored:
    a random intensity curve (probability 0.9), local pixel shuffling (0.5), then either
    in-painting holes (20% of the painted images) or out-painting, keeping random boxes
    and filling the rest (80%); painting with probability 0.9. Fills are uniform noise in
    the image's intensity range.

    Args:
        spatial_size: The images' size.
        seed: Seed of every random draw.
    """

    def __init__(self, spatial_size: Sequence[int], seed: int) -> None:
        shuffle_low, shuffle_high = _sides(spatial_size, 0.05, 0.15)
        in_low, in_high = _sides(spatial_size, 0.15, 0.35)
        out_low, out_high = _sides(spatial_size, 0.45, 0.75)
        self.intensity_and_shuffle = _PerImage([
            RandHistogramShift(num_control_points=(4, 8), prob=0.9),
            RandCoarseShuffle(holes=4, max_holes=12, spatial_size=shuffle_low,
                              max_spatial_size=shuffle_high, prob=0.5)], seed)
        self.inpaint = _PerImage([RandCoarseDropout(
            holes=1, max_holes=5, spatial_size=in_low, max_spatial_size=in_high,
            dropout_holes=True, fill_value=(0.0, 1.0), prob=1.0)], seed + 1)
        self.outpaint = _PerImage([RandCoarseDropout(
            holes=1, max_holes=3, spatial_size=out_low, max_spatial_size=out_high,
            dropout_holes=False, fill_value=(0.0, 1.0), prob=1.0)], seed + 2)
        self.rng = np.random.default_rng(seed + 3)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        low = images.amin(dim=tuple(range(1, images.ndim)), keepdim=True)
        span = images.amax(dim=tuple(range(1, images.ndim)), keepdim=True) - low
        span = span.clamp_min(1e-6)
        unit = (images - low) / span  # fills are drawn in [0, 1], the image's own range
        corrupted = self.intensity_and_shuffle(unit)
        out = []
        for image in corrupted:
            draw = self.rng.random()
            if draw < 0.9 * 0.2:
                image = self.inpaint(image[None])[0]
            elif draw < 0.9:
                image = self.outpaint(image[None])[0]
            out.append(image)
        return torch.stack(out) * span + low
