"""Mask files as class indices: the stated rules for names, 0/255, palette and colour masks,
and several masks of one image (medxfer/data/masks.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medxfer.data.masks import image_stem_of_mask, is_mask_name, mask_class_values, read_mask
from medxfer.errors import DataError
from tests.data.datafiles import write_png


@pytest.mark.parametrize("stem, owner", [
    ("benign (1)_mask", "benign (1)"), ("benign (1)_mask_1", "benign (1)"),
    ("case7_SEG", "case7"), ("x_segmentation", "x"), ("scan_Label", "scan")])
def test_mask_names_and_the_image_they_belong_to(stem, owner):
    assert is_mask_name(stem) and image_stem_of_mask(stem) == owner


@pytest.mark.parametrize("stem", ["benign (1)", "masked", "segment_3", "label7"])
def test_names_that_are_not_masks(stem):
    assert not is_mask_name(stem)


def _mask(path):
    return read_mask({"id": "c", "image": "i.png", "label": str(path)})


def test_binary_0_255_masks_read_as_0_1(tmp_path):
    write_png(tmp_path / "m.png", np.eye(4) * 255)
    values = mask_class_values(_mask(tmp_path / "m.png"), 2)
    assert values.dtype == np.int64 and set(np.unique(values)) == {0, 1}
    assert set(np.unique(mask_class_values(_mask(tmp_path / "m.png"), None))) == {0, 1}


def test_a_palette_mask_keeps_its_indices(tmp_path):
    """Before: a palette PNG was converted to RGB (3 channels) and refused."""
    image = Image.fromarray(np.array([[0, 1], [2, 2]], np.uint8), mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    image.save(tmp_path / "p.png")
    mask = _mask(tmp_path / "p.png")
    assert mask.array.shape == (1, 2, 2) and mask.array.tolist() == [[[0, 1], [2, 2]]]


def test_a_colour_mask_of_black_and_one_colour_is_binary(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[1:3, 1:3] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "red.png")
    assert _mask(tmp_path / "red.png").array[0].tolist() == (rgb[..., 0] > 0).astype(int).tolist()


def test_grey_stored_as_colour_is_read_as_grey(tmp_path):
    grey = np.array([[0, 0], [1, 2]], np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "g.png")
    assert _mask(tmp_path / "g.png").array[0].tolist() == grey.tolist()


def test_a_colour_mask_of_several_colours_is_refused_listing_them(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0] = (255, 0, 0)
    rgb[1] = (0, 255, 0)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"c\.png' is a colour image with 3 colours \(\(0, 0, 0\) "
                                        r"x8, .*\(255, 0, 0\) x4.*save it as class indices"):
        _mask(tmp_path / "c.png")


def test_masks_of_one_image_in_other_shapes_are_refused(tmp_path):
    write_png(tmp_path / "a_mask.png", np.zeros((4, 4)))
    write_png(tmp_path / "a_mask_1.png", np.zeros((4, 5)))
    with pytest.raises(DataError, match=r"a_mask\.png' and .*a_mask_1\.png' of one image differ"):
        read_mask({"id": "a", "image": "a.png", "label_files": [str(tmp_path / "a_mask.png"),
                                                                str(tmp_path / "a_mask_1.png")]})
