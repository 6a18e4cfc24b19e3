"""Fixtures: finished-looking runs with real, untrained networks (see helpers.py)."""

from __future__ import annotations

import pytest

from tests.workflows.export.helpers import CLS_2D, REG_2D, SEG_3D, make_run


@pytest.fixture
def seg_run(tmp_path):
    """A 3D MONAI UNet segmentation run (3 classes) with whole-image inference."""
    return make_run(tmp_path / "seg_run", SEG_3D, spatial_dims=3, num_classes=3)


@pytest.fixture
def cls_run(tmp_path):
    """A 2D classification run (basic_cnn, 2 classes, 32x32)."""
    return make_run(tmp_path / "cls_run", CLS_2D, spatial_dims=2, num_classes=2)


@pytest.fixture
def reg_run(tmp_path):
    """A 2D regression run (basic_cnn, one output per image, target column ``label``)."""
    return make_run(tmp_path / "reg_run", REG_2D, spatial_dims=2, num_classes=1,
                    class_names=["label"])
