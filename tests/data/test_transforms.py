"""Preprocessing: intensity modes, channels, ImageNet stats, the 3D chain, mask checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medxfer.config import PreprocessConfig
from medxfer.data.preprocess import preprocess_transform
from medxfer.data.transforms import AdaptChannels, resolve_intensity
from medxfer.errors import DataError
from tests.data.datafiles import write_nifti, write_png


def test_auto_intensity_rules():
    kw = {"dtype": "float32", "imagenet_norm": False}
    assert resolve_intensity("auto", modality="CT", spatial_dims=3, **kw) == "ct_window"
    assert resolve_intensity("auto", modality="MR", spatial_dims=3, **kw) == "zscore"
    assert resolve_intensity("auto", modality="MR", spatial_dims=3, dtype="uint8",
                             imagenet_norm=True) == "percentile"
    assert resolve_intensity("auto", modality=None, spatial_dims=2, dtype="uint8",
                             imagenet_norm=True) == "uint8"
    assert resolve_intensity("minmax", modality="CT", spatial_dims=3, **kw) == "minmax"


def test_grey_imagenet_uses_mean_stats_and_rgb_expands():
    grey = torch.full((1, 4, 4), 0.449)
    assert AdaptChannels("auto", True)(grey).abs().max() < 1e-6
    rgb = AdaptChannels("rgb", True)(torch.full((1, 4, 4), 0.5))
    assert rgb.shape == (3, 4, 4)
    assert rgb[0, 0, 0] == pytest.approx((0.5 - 0.485) / 0.229)
    assert AdaptChannels("grey", False)(torch.ones(3, 2, 2)).shape == (1, 2, 2)
    assert AdaptChannels("rgb").out_channels(1) == 3


def test_ct_window_3d_chain_with_mask(tmp_path):
    vol = np.full((10, 8, 6), -1000, np.int16)
    vol[2:5, 2:5, 2:4] = 400
    mask = np.zeros((10, 8, 6), np.uint8)
    mask[2:5, 2:5, 2:4] = 1
    pre = PreprocessConfig(intensity="ct_window", spacing=[2.0, 2.0, 2.0], image_size=[4, 4, 4])
    chain = preprocess_transform(pre, task="segmentation", spatial_dims=3, num_classes=2,
                                 imagenet_norm=False)
    out = chain({"image": str(write_nifti(tmp_path / "i.nii.gz", vol)),
                 "label": str(write_nifti(tmp_path / "m.nii.gz", mask)), "id": "c"})
    assert out["image"].shape == (1, 4, 4, 4) and out["image"].dtype == torch.float32
    assert 0 <= out["image"].min() and out["image"].max() <= 1
    assert out["label"].dtype == torch.int64 and set(out["label"].unique().tolist()) <= {0, 1}
    assert out["label"].sum() > 0 and type(out["image"]) is torch.Tensor


def test_orientation_to_ras(tmp_path):
    import nibabel as nib

    vol = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(vol, np.diag([-1.0, 1.0, 1.0, 1.0])), str(tmp_path / "las.nii.gz"))
    chain = preprocess_transform(PreprocessConfig(intensity="none"), task="classification",
                                 spatial_dims=3, num_classes=2, imagenet_norm=False)
    out = chain({"image": str(tmp_path / "las.nii.gz"), "id": "x"})
    np.testing.assert_array_equal(out["image"][0].numpy(), vol[::-1])


def test_binary_mask_0_255_and_out_of_range(tmp_path):
    write_png(tmp_path / "i.png", np.full((6, 6), 100))
    write_png(tmp_path / "m255.png", np.pad(np.full((2, 2), 255), 2))
    write_png(tmp_path / "m7.png", np.pad(np.full((2, 2), 7), 2))
    chain = preprocess_transform(PreprocessConfig(), task="segmentation", spatial_dims=2,
                                 num_classes=2, imagenet_norm=False)
    out = chain({"image": str(tmp_path / "i.png"), "label": str(tmp_path / "m255.png"), "id": "a"})
    assert out["label"].max() == 1 and out["image"].max() == pytest.approx(100 / 255)
    with pytest.raises(RuntimeError) as info:
        chain({"image": str(tmp_path / "i.png"), "label": str(tmp_path / "m7.png"), "id": "b"})
    from medxfer.data.datasets import unwrap_errors

    err = unwrap_errors(info.value)
    assert isinstance(err, DataError) and "m7.png" in str(err) and "[7]" in str(err)


@pytest.mark.parametrize("channels,norm,c", [("rgb", True, 1), ("grey", False, 3),
                                             ("grey", True, 4), ("auto", True, 3),
                                             ("auto", True, 2)])
def test_adapt_channels_on_a_batch_equals_item_by_item(channels, norm, c):
    adapt = AdaptChannels(channels, norm)
    batch = torch.rand(5, c, 6, 7)
    expected = torch.stack([adapt(x) for x in batch])
    assert torch.allclose(adapt(batch, channel_dim=1), expected, atol=1e-6)
