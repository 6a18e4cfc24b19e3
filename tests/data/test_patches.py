"""PosNegPatches: MONAI's patch draw, the same patches cut as plain slices."""

from __future__ import annotations

import pytest
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import FgBgToIndices, RandCropByPosNegLabeld

from medxfer.data.patches import PosNegPatches


@pytest.fixture
def no_metadata():
    previous = get_track_meta()
    set_track_meta(False)
    yield
    set_track_meta(previous)


def _pair(size, samples, pos, indices):
    extra = {"fg_indices_key": "fg", "bg_indices_key": "bg"} if indices else {}
    kwargs = dict(keys=["image", "label"], label_key="label", spatial_size=size, pos=pos,
                  neg=1.0 - pos, num_samples=samples, allow_smaller=False, **extra)
    return RandCropByPosNegLabeld(**kwargs).set_random_state(7), \
        PosNegPatches(**kwargs).set_random_state(7)


@pytest.mark.parametrize("shape,size,indices", [((13, 17), [6, 8], True),
                                                ((13, 17), [6, -1], False),
                                                ((9, 11, 7), [4, 5, 3], True)])
def test_the_same_patches_as_monai(no_metadata, shape, size, indices):
    monai_draw, ours = _pair(size, samples=3, pos=0.6, indices=indices)
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        label = (torch.rand(1, *shape, generator=g) > 0.85).float()
        item = {"image": torch.randn(1, *shape, generator=g), "label": label, "id": ["x"]}
        if indices:
            item["fg"], item["bg"] = FgBgToIndices()(label)
        want, got = monai_draw(dict(item)), ours(dict(item))
        assert len(got) == len(want) == 3
        for w, o in zip(want, got):
            assert set(o) == set(w) == {"image", "label", "id"}
            assert o["id"] == ["x"] and o["id"] is not item["id"]  # copied, as MONAI does
            for key in ("image", "label"):
                assert type(o[key]) is torch.Tensor
                assert torch.equal(o[key], torch.as_tensor(w[key]))


def test_with_metadata_monai_crops():
    """Tracking metadata (inference-style use) goes through MONAI's own crop, which
    records each patch's place."""
    _, ours = _pair([4, 4], samples=2, pos=1.0, indices=False)
    label = torch.zeros(1, 10, 10)
    label[0, 4:6, 4:6] = 1
    out = ours({"image": torch.rand(1, 10, 10), "label": label})
    assert "crop_center" in out[0]["image"].meta
