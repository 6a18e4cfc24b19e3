"""Batch augmentation (``data.augment_on: batch``): every op, MONAI's geometry, seeding."""

from __future__ import annotations

import pytest
import torch

from medxfer.data.augment import OPS
from medxfer.data.batch_augment import (BATCH_OPS, BatchAugmentation, _rotation, _shear,
                                        affine_matrices)
from medxfer.errors import ConfigError

SIZES = {2: [20, 24], 3: [10, 12, 14]}


def _batch(dims: int, n: int = 8, seg: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(dims)
    image = torch.rand((n, 1, *SIZES[dims]), generator=gen)
    label = (image > 0.6).long() + (image > 0.85).long() if seg else None
    return image, label


def _augment(ops, dims: int, seg: bool = True, seed: int = 0) -> BatchAugmentation:
    return BatchAugmentation(ops, spatial_dims=dims, segmentation=seg,
                             spatial_size=SIZES[dims], seed=seed)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("op", BATCH_OPS)
def test_every_op_keeps_shapes_types_and_mask_values(op, dims):
    image, label = _batch(dims)
    out, moved = _augment([{"name": op, "prob": 1.0}], dims)(image, label)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert moved.shape == label.shape and moved.dtype == label.dtype
    assert set(moved.unique().tolist()) <= {0, 1, 2}
    assert not torch.equal(out, image)  # every sample was chosen, so something changed
    if op in ("contrast", "brightness", "gamma", "noise"):
        assert torch.equal(moved, label)  # intensity ops leave the mask alone


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("op", BATCH_OPS)
def test_prob_zero_changes_nothing(op, dims):
    image, label = _batch(dims)
    out, moved = _augment([{"name": op, "prob": 0.0}], dims)(image, label)
    assert torch.allclose(out, image) and torch.equal(moved, label)


def test_prob_picks_about_that_share_of_samples():
    image = torch.zeros(4000, 1, 4, 4)
    out, _ = _augment([{"name": "brightness", "prob": 0.3, "offset": 0.1}], 2, seg=False)(image)
    shift = out.flatten(1).mean(1)
    assert 0.25 < (shift != 0).float().mean() < 0.35
    assert shift.abs().max() <= 0.1 + 1e-6
    assert torch.equal(out.flatten(1).amin(1), out.flatten(1).amax(1))  # one shift per sample


def test_flip_is_exact_and_moves_the_mask_with_the_image():
    image, label = _batch(2, n=64)
    out, moved = _augment([{"name": "flip", "prob": 0.5, "axes": [0, 1]}], 2)(image, label)
    for i in range(64):
        candidates = [image[i], image[i].flip(1), image[i].flip(2), image[i].flip(1).flip(2)]
        k = next(k for k, c in enumerate(candidates) if torch.equal(out[i], c))
        expected = [label[i], label[i].flip(1), label[i].flip(2), label[i].flip(1).flip(2)][k]
        assert torch.equal(moved[i], expected)


@pytest.mark.parametrize("dims", [2, 3])
def test_affine_resampling_equals_monai_affine(dims):
    from monai.transforms import Affine

    image = torch.rand(1, 1, *SIZES[dims])
    rotate = [0.3, -0.2, 0.15][:1 if dims == 2 else 3]
    shear = [0.1, -0.05, 0.02, 0.03, -0.04, 0.06][:dims * (dims - 1)]
    translate, scale = [1.5, -2.0, 0.7][:dims], [1.1, 0.9, 1.05][:dims]
    expected = Affine(rotate_params=rotate, shear_params=shear, translate_params=translate,
                      scale_params=scale, padding_mode="zeros", image_only=True)(image[0])
    matrix = affine_matrices(_rotation(torch.tensor([rotate]), dims),
                             _shear(torch.tensor([shear]), dims), torch.tensor([translate]),
                             torch.tensor([scale]))
    out, _ = _augment([], dims, seg=False)._resample(image, None, matrix)
    assert torch.allclose(out[0], torch.as_tensor(expected), atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_geometric_ops_move_mask_and_image_together(dims):
    mask = torch.zeros(16, 1, *SIZES[dims], dtype=torch.long)
    centre = tuple(slice(s // 4, 3 * s // 4) for s in SIZES[dims])
    mask[(slice(None), slice(None), *centre)] = 1
    ops = [{"name": "rotate", "prob": 1.0}, {"name": "scale", "prob": 1.0},
           {"name": "affine", "prob": 1.0, "shear": 0.05}]
    out, moved = _augment(ops, dims)(mask.float(), mask)
    assert not torch.equal(moved, mask)
    agree = ((out > 0.5).long() == moved).float().mean()
    assert agree > 0.97


def test_intensity_ops_follow_monai_semantics():
    image = torch.rand(64, 1, 8, 8)
    contrast, _ = _augment([{"name": "contrast", "prob": 1.0, "factor": 0.2}], 2)(image)
    assert torch.allclose(contrast.flatten(1).mean(1), image.flatten(1).mean(1), atol=1e-5)
    ratio = contrast.flatten(1).std(1) / image.flatten(1).std(1)
    assert ((ratio > 0.8 - 1e-4) & (ratio < 1.2 + 1e-4)).all()
    gamma, _ = _augment([{"name": "gamma", "prob": 1.0}], 2)(image)
    for stat in ("amin", "amax"):  # the range is kept
        assert torch.allclose(getattr(gamma.flatten(1), stat)(1),
                              getattr(image.flatten(1), stat)(1), atol=1e-5)
    noisy, _ = _augment([{"name": "noise", "prob": 1.0, "std": 0.05}], 2)(image)
    assert 0 < (noisy - image).flatten(1).std(1).max() < 0.06


def test_seeded_reproducible_and_reseedable():
    image, label = _batch(3)
    ops = [{"name": "flip", "axes": [0, 1, 2]}, {"name": "affine"}, {"name": "noise"}]
    a = _augment(ops, 3, seed=5)(image, label)
    b = _augment(ops, 3, seed=5)(image, label)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = _augment(ops, 3, seed=6)(image, label)
    assert not torch.equal(a[0], c[0])
    again = _augment(ops, 3, seed=6).set_random_state(5)(image, label)
    assert torch.equal(a[0], again[0])


def test_its_random_state_can_be_saved_and_continued():
    """What a checkpoint keeps: a resumed run draws what the uninterrupted one would."""
    image, label = _batch(2)
    ops = [{"name": "flip"}, {"name": "affine"}, {"name": "noise", "prob": 1.0}]
    augment = _augment(ops, 2, seed=5)
    augment(image, label)
    saved = augment.random_state_dict()
    expected = augment(image, label)
    fresh = _augment(ops, 2, seed=99)
    fresh.load_random_state_dict(saved)
    got = fresh(image, label)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_every_op_is_either_batched_or_refused_with_a_clear_message():
    for name in OPS:
        if name in BATCH_OPS:
            _augment([{"name": name}], 2)
            continue
        with pytest.raises(ConfigError, match=rf"ops\[0\] \({name}\).*augment_on: cpu"):
            _augment([{"name": name}], 2)


def test_bad_options_are_refused_as_for_per_item_augmentation():
    with pytest.raises(ConfigError, match="unknown option"):
        _augment([{"name": "affine", "angle": 3}], 2)
    with pytest.raises(ConfigError, match="prob must be between"):
        _augment([{"name": "flip", "prob": 2}], 2)
    with pytest.raises(ConfigError, match="not a spatial axis"):
        _augment([{"name": "flip", "axes": [2]}], 2)


def test_a_batch_of_the_wrong_rank_is_refused():
    with pytest.raises(ValueError, match="spatial dims"):
        _augment([{"name": "flip"}], 3)(torch.zeros(2, 1, 8, 8))


def test_pickles_with_its_random_state():  # spawned loader workers receive a copy
    import pickle

    image, label = _batch(2)
    ops = [{"name": "affine", "prob": 1.0}, {"name": "noise", "prob": 1.0}]
    augment = _augment(ops, 2, seed=4)
    augment(image, label)
    copy = pickle.loads(pickle.dumps(augment))
    a, b = augment(image, label), copy(image, label)
    assert torch.equal(a[1], b[1])  # the same geometric draws continue in the copy
