"""amp: the channels-last layout of 2D and 3D batches."""

from __future__ import annotations

import torch

from medxfer.training.amp import channels_last_format, to_channels_last


def test_channels_last_for_2d_and_3d_batches():
    assert channels_last_format(2) is torch.channels_last
    assert channels_last_format(3) is torch.channels_last_3d
    flat, volume = torch.rand(2, 3, 5, 6), torch.rand(2, 1, 4, 5, 6)
    assert to_channels_last(flat).is_contiguous(memory_format=torch.channels_last)
    assert to_channels_last(volume).is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(to_channels_last(volume), volume)  # the layout, not the values
    vectors = torch.rand(2, 7)
    assert to_channels_last(vectors) is vectors
