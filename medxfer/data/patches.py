"""Random training patches: MONAI's foreground/background-balanced draw, cut cheaply."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from monai.data import get_track_meta
from monai.transforms import RandCropByPosNegLabeld, SpatialCrop
from monai.utils import convert_to_tensor, fall_back_tuple


class PosNegPatches(RandCropByPosNegLabeld):
    """MONAI's ``RandCropByPosNegLabeld`` that cuts each patch as a plain slice when no
    metadata is tracked (training: :class:`medxfer.data.datasets.CaseDataset` turns it off).

    The centres are MONAI's (the same random draws) and so are the slices
    (``SpatialCrop.compute_slices``); only MONAI's per-crop metadata, built and then thrown
    away when tracking is off, is skipped (a Hippocampus 2D batch of 32 patches: 19.9 ms
    instead of 25.7). With metadata tracked, or lazily, MONAI's own crop runs.
    """

    def __call__(self, data: Any, lazy: bool | None = None) -> list[dict[Any, Any]]:
        """A list of ``num_samples`` dicts, each with one patch of every key."""
        if get_track_meta() or (self.lazy if lazy is None else lazy):
            return super().__call__(data, lazy)
        d = dict(data)
        fg, bg = d.pop(self.fg_indices_key, None), d.pop(self.bg_indices_key, None)
        self.randomize(d.get(self.label_key), fg, bg, d.get(self.image_key))
        samples = self.cropper.num_samples
        out = [dict(d) for _ in range(samples)]
        for i in range(samples):
            for key in set(d).difference(self.keys):
                out[i][key] = deepcopy(d[key])
        cuts: dict[tuple[int, ...], list[tuple[slice, ...]]] = {}  # by spatial shape
        for key in self.key_iterator(d):
            image = convert_to_tensor(d[key], track_meta=False)
            shape = tuple(image.shape[1:])
            if shape not in cuts:  # image and mask share one: the slices are found once
                size = fall_back_tuple(self.cropper.spatial_size, default=shape)
                cuts[shape] = [(slice(None), *SpatialCrop.compute_slices(roi_center=centre,
                                                                        roi_size=size))
                               for centre in self.cropper.centers or []]
            for i, cut in enumerate(cuts[shape]):
                out[i][key] = image[cut]
        return out
