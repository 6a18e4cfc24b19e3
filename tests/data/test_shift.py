"""Scanner-like shifts: named, deterministic, dtype-preserving; copies never overwrite."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medxfer.errors import ConfigError
from medxfer.data.medmnist import load_medmnist
from medxfer.data.shift import (CORRUPTIONS, apply_recipe, load_recipe, parse_op, parse_recipe,
                                shift_medmnist)
from medxfer.errors import DataError


def _images(shape=(4, 12, 12), seed=0):
    return np.random.default_rng(seed).integers(30, 220, shape).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_each_corruption_changes_images_deterministically(name, spatial_dims):
    images = _images((3, 8, 8) if spatial_dims == 2 else (2, 6, 6, 6))
    steps = parse_recipe([{"name": name}])
    a = apply_recipe(images, steps, spatial_dims=spatial_dims, seed=3)
    b = apply_recipe(images, steps, spatial_dims=spatial_dims, seed=3)
    assert a.dtype == images.dtype and a.shape == images.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, images)


def test_float_images_keep_their_range_and_type():
    images = np.random.default_rng(0).normal(100, 20, (2, 10, 10)).astype(np.float32)
    out = apply_recipe(images, parse_recipe([{"name": "gamma", "gamma": 2.0}]), spatial_dims=2)
    assert out.dtype == np.float32
    assert images.min() <= out.min() and out.max() <= images.max() + 1e-3


def test_contrast_keeps_the_mean_and_shrinks_the_spread():
    images = _images()
    out = apply_recipe(images, parse_recipe([{"name": "contrast", "factor": 0.5}]),
                       spatial_dims=2).astype(float)
    assert abs(out.mean() - images.mean()) < 1.0
    assert out.std() < 0.6 * images.std()


@pytest.mark.parametrize("recipe,match", [
    ([{"name": "gama"}], "did you mean 'gamma'"),
    ([{"name": "blur", "radius": 2}], r"\[0\]\.radius: blur takes sigma"),
    ([{"name": "noise", "std": -1}], r"\[0\]\.std: expected a number > 0"),
    ([], "non-empty list"),
])
def test_bad_recipes_name_the_step(recipe, match):
    with pytest.raises(ConfigError, match=match):
        parse_recipe(recipe)


def test_ops_and_recipe_files(tmp_path):
    assert parse_op("gamma:gamma=1.8") == {"name": "gamma", "gamma": 1.8}
    with pytest.raises(ConfigError, match="'gamma' is given twice"):
        parse_op("gamma:gamma=2,gamma=3")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed: 4\ncorruptions:\n  - {name: blur, sigma: 0.5}\n")
    steps, seed = load_recipe(recipe, ["noise:std=0.1"])
    assert seed == 4 and [s["name"] for s in steps] == ["blur", "noise"]
    recipe.write_text("sead: 4\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_recipe(recipe, [])


def test_shifted_medmnist_copy_keeps_labels_and_never_overwrites(tmp_path):
    source = tmp_path / "tinymnist.npz"
    arrays = {f"{s}_images": _images((4, 8, 8), seed=i) for i, s in
              enumerate(("train", "val", "test"))}
    arrays.update({f"{s}_labels": np.array([[0], [1], [0], [1]]) for s in
                   ("train", "val", "test")})
    np.savez(source, **arrays)
    out = shift_medmnist(source, tmp_path / "shifted.npz",
                         parse_recipe([{"name": "gamma"}]), seed=0)
    data = load_medmnist(out)
    original = load_medmnist(source)
    assert np.array_equal(data.labels["test"], original.labels["test"])
    assert not np.array_equal(data.images["train"], original.images["train"])
    with np.load(out) as npz:
        assert json.loads(str(npz["shift_recipe"]))["corruptions"][0]["name"] == "gamma"
    before = out.read_bytes()
    with pytest.raises(DataError, match="already exists"):
        shift_medmnist(source, out, parse_recipe([{"name": "blur"}]))
    assert out.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))
    # a shifted copy of the shifted copy records both recipes, the newest first
    twice = shift_medmnist(out, tmp_path / "twice.npz", parse_recipe([{"name": "blur"}]),
                           seed=3)
    with np.load(twice) as npz:
        recipe = json.loads(str(npz["shift_recipe"]))
    assert recipe["corruptions"][0]["name"] == "blur" and recipe["seed"] == 3
    assert recipe["applied_after"]["corruptions"][0]["name"] == "gamma"
    assert "applied_after" not in recipe["applied_after"]


def test_missing_source_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        shift_medmnist(tmp_path / "nope.npz", tmp_path / "out.npz",
                       parse_recipe([{"name": "blur"}]))


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 8, 8)), (3, (2, 8, 8, 6))])
def test_a_resolution_factor_that_flattens_the_images_is_refused(spatial_dims, shape):
    images = _images(shape)
    size = "x".join(str(s) for s in shape[1:])
    with pytest.raises(ConfigError, match=rf"corruption 1 \(resolution\): factor 20 "
                                          rf"downsamples the {size} images to .*fewer than 2 "
                                          r"pixels .* use a smaller factor \(\d+ leaves 2\)"):
        apply_recipe(images, parse_recipe([{"name": "gamma"},
                                           {"name": "resolution", "factor": 20}]),
                     spatial_dims=spatial_dims)
    edge = min(shape[1:]) / 2  # the factor the message suggests still changes the images
    out = apply_recipe(images, parse_recipe([{"name": "resolution", "factor": edge}]),
                       spatial_dims=spatial_dims)
    assert not np.array_equal(out, images)
    flat = np.ones((2, 8, 1), np.uint8)  # an axis of one pixel is left as it is
    apply_recipe(flat, parse_recipe([{"name": "resolution", "factor": 4}]), spatial_dims=2)
