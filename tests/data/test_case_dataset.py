"""CaseDataset: how drawing augmented items treats the process's warnings."""

from __future__ import annotations

import warnings

import torch

from medxfer.data.datasets import CaseDataset
from medxfer.data.patches import PosNegPatches
from medxfer.data.transforms import AdaptChannels


def _background_only_cases(n: int) -> list[dict]:
    return [{"image": torch.rand(1, 12, 12), "label": torch.zeros(1, 12, 12), "id": f"c{i}"}
            for i in range(n)]


def test_background_only_patches_neither_warn_nor_reset_warning_registries(monkeypatch,
                                                                          recwarn):
    draw = PosNegPatches(keys=["image", "label"], label_key="label", spatial_size=[6, 6],
                         pos=1.0, neg=0.0, num_samples=2, allow_smaller=False)
    dataset = CaseDataset(_background_only_cases(6), task="segmentation",
                          adapt=AdaptChannels("auto", False), augment=draw, seed=0)
    mutations = []
    original = warnings._filters_mutated
    monkeypatch.setattr(warnings, "_filters_mutated",
                        lambda: (mutations.append(1), original())[1])
    for index in range(len(dataset)):
        patches = dataset[index]
        assert len(patches) == 2 and int(patches[0]["label"].sum()) == 0
    # MONAI warns at each draw from a case without foreground: silenced
    assert not [w for w in recwarn if "Num foregrounds 0" in str(w.message)]
    # ... by one filter for the process, not a filter change around every draw, which
    # made torch's "shown once" warnings show again at every training step
    assert len(mutations) <= 1
