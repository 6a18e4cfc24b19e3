"""Augmentation: presets in 2D/3D, op lists, errors with suggestions, seeding, masks."""

from __future__ import annotations

import pytest
import torch

from medxfer.config import PluginSpec
from medxfer.data.augment import PRESETS, build_augmentation
from medxfer.errors import ConfigError


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("dims", [2, 3])
def test_presets_keep_shapes_and_mask_values(preset, dims):
    size = [16] * dims
    aug = build_augmentation(preset, spatial_dims=dims, segmentation=True, spatial_size=size)
    if preset == "none":
        assert aug is None
        return
    mask = torch.zeros(1, *size)
    mask[(0,) + (slice(4, 10),) * dims] = 2
    out = aug({"image": torch.rand(1, *size), "label": mask})
    assert out["image"].shape == (1, *size) and out["label"].shape == (1, *size)
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, 2.0}


def test_seeded_and_reproducible():
    x = {"image": torch.rand(1, 16, 16)}
    a = build_augmentation("heavy", spatial_dims=2, seed=3)
    b = build_augmentation("heavy", spatial_dims=2, seed=3)
    c = build_augmentation("heavy", spatial_dims=2, seed=4)
    outs_a = [a(dict(x))["image"] for _ in range(4)]
    outs_b = [b(dict(x))["image"] for _ in range(4)]
    outs_c = [c(dict(x))["image"] for _ in range(4)]
    assert all(torch.equal(p, q) for p, q in zip(outs_a, outs_b))
    assert not all(torch.equal(p, q) for p, q in zip(outs_a, outs_c))


def test_ops_override_moves_mask_with_image():
    ops = [PluginSpec(name="flip", prob=1.0, axes=[1])]
    aug = build_augmentation("standard", ops, spatial_dims=2, segmentation=True)
    image = torch.arange(16.0).reshape(1, 4, 4)
    out = aug({"image": image, "label": (image > 9).float()})
    assert torch.equal(out["image"], image.flip(-1))
    assert torch.equal(out["label"], (image.flip(-1) > 9).float())


def test_unknown_op_and_option():
    with pytest.raises(ConfigError, match=r"unknown augmentation op 'flp'.*Did you mean 'flip'"):
        build_augmentation(ops=[{"name": "flp"}], spatial_dims=2)
    with pytest.raises(ConfigError, match=r"ops\[0\] \(noise\): unknown option.*sigma.*allowed"):
        build_augmentation(ops=[{"name": "noise", "sigma": 1}], spatial_dims=2)
    with pytest.raises(ConfigError, match="prob must be between 0 and 1"):
        build_augmentation(ops=[{"name": "gamma", "prob": 2}], spatial_dims=3)


def test_patch_padding_pads_only_what_is_smaller_than_the_patch():
    from monai.transforms import SpatialPadd

    from medxfer.data.augment import PadSmallerToPatch

    pad = PadSmallerToPatch(["image", "label"], [4, 6])
    large = {"image": torch.randn(1, 5, 6), "label": torch.ones(1, 5, 6)}
    assert pad(large) is large  # nothing to pad: passed as it is
    small = {"image": torch.randn(1, 3, 7), "label": torch.ones(1, 3, 7)}
    got, want = pad(dict(small)), SpatialPadd(["image", "label"], [4, 6])(dict(small))
    for key in ("image", "label"):
        assert got[key].shape == (1, 4, 7)
        assert torch.equal(torch.as_tensor(got[key]), torch.as_tensor(want[key]))


def _patch_chain(seed: int, budget: int | None = None):
    from types import SimpleNamespace

    from medxfer.data.augment import CachedFgBgIndices

    chain = build_augmentation("none", spatial_dims=2, segmentation=True, seed=seed,
                               patch=SimpleNamespace(size=[4, 6], samples_per_case=2,
                                                     pos_fraction=0.7))
    memo = [t for t in chain.transforms if isinstance(t, CachedFgBgIndices)]
    assert len(memo) == 1
    if budget is not None:
        memo[0].budget_bytes = budget
    return chain, memo[0]


def test_patch_draws_reuse_each_items_indices_and_draw_the_same_patches():
    import pickle

    from medxfer.data.augment import CachedFgBgIndices

    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(1, 9, 11, generator=g),
              "label": (torch.rand(1, 9, 11, generator=g) > 0.8).float()} for _ in range(3)]
    kept, memo = _patch_chain(seed=5)
    fresh, none = _patch_chain(seed=5, budget=0)
    for epoch in range(3):
        for i, item in enumerate(items):
            a = kept({**item, CachedFgBgIndices.KEY: i})
            b = fresh({**item, CachedFgBgIndices.KEY: i})
            for pa, pb in zip(a, b):
                assert set(pa) == set(pb) == {"image", "label"}  # the helper keys are gone
                assert torch.equal(torch.as_tensor(pa["image"]), torch.as_tensor(pb["image"]))
                assert torch.equal(torch.as_tensor(pa["label"]), torch.as_tensor(pb["label"]))
    assert sorted(memo._memo) == [0, 1, 2] and memo._used > 0
    assert not none._memo  # over budget: found anew each time
    copy = pickle.loads(pickle.dumps(memo))
    assert copy.budget_bytes == memo.budget_bytes and not copy._memo  # not pickled
    fg, bg = memo._memo[1]
    label = items[1]["label"].flatten()
    assert set(torch.as_tensor(fg).tolist()) == set(torch.nonzero(label).flatten().tolist())
    assert len(fg) + len(bg) == label.numel()


@pytest.mark.parametrize("dims,segmentation", [(2, False), (2, True), (3, True)])
def test_a_fixed_size_chain_gives_the_same_values(dims, segmentation):
    """``fixed_size`` lets RandAffine keep its identity grid (MONAI ``cache_grid``): only
    faster, every draw the same to the bit."""
    from monai.transforms import RandAffined

    size = [12, 10] if dims == 2 else [8, 9, 7]
    ops = [{"name": "flip"}, {"name": "affine", "prob": 0.7, "shear": 0.05},
           {"name": "contrast"}, {"name": "rotate", "prob": 0.3}]
    plain = build_augmentation("none", ops, spatial_dims=dims, segmentation=segmentation,
                               spatial_size=size, seed=11)
    fixed = build_augmentation("none", ops, spatial_dims=dims, segmentation=segmentation,
                               spatial_size=size, seed=11, fixed_size=True)
    affine = [t for t in fixed.transforms if isinstance(t, RandAffined)]
    assert affine and affine[0].rand_affine.cache_grid
    assert not [t for t in plain.transforms if isinstance(t, RandAffined)][0].rand_affine.cache_grid
    g = torch.Generator().manual_seed(0)
    moved = 0
    for _ in range(12):
        item = {"image": torch.rand(1, *size, generator=g)}
        if segmentation:
            item["label"] = (torch.rand(1, *size, generator=g) > 0.7).float()
        a, b = plain(dict(item)), fixed(dict(item))
        for key in item:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))
            assert b[key].shape == item[key].shape
        moved += not torch.equal(torch.as_tensor(b["image"]), item["image"])
    assert moved > 6
